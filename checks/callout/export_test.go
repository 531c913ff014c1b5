package callout

// Test-only API.

// Refused reports whether the server refused the prober itself.
func (r *Result) Refused() bool { return r.refused }
