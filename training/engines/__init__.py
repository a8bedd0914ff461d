"""Inner-loop engines."""
