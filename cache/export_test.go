package cache

// Test-only API.

// Up reports whether Redis is in use now.
func (s *Shared) Up() bool { return s.up.Load() }
