"""Live detection: the tick, the scheduler, the alarm log and data health."""
