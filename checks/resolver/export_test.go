package resolver

// Test-only API.

// CloseIdle closes the TCP connections kept for reuse.
func (s *Stub) CloseIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for server, l := range s.idle {
		for _, c := range l {
			c.conn.Close()
		}
		delete(s.idle, server)
	}
}
