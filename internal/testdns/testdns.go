// Package testdns is an authoritative DNS server on loopback for tests:
// zones given as presentation-format records, with query counting and knobs
// for the awkward cases (SERVFAIL, silence, refusing TCP).
package testdns

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server serves records from memory on UDP and TCP at one loopback port.
type Server struct {
	Addr string // host:port

	mu        sync.Mutex
	records   map[string][]dns.RR // lower-case FQDN
	servfail  map[string]bool
	drop      map[string]bool
	queries   map[string]int // "name/TYPE" -> count
	refuseTCP bool
	tcpConns  int
	udp, tcp  *dns.Server
}

// countingListener counts the TCP connections a server accepts.
type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.mu.Lock()
		l.s.tcpConns++
		l.s.mu.Unlock()
	}
	return c, err
}

// TCPConns is the number of TCP connections accepted so far.
func (s *Server) TCPConns() int { s.mu.Lock(); defer s.mu.Unlock(); return s.tcpConns }

// Start listens on 127.0.0.1 (a random port) and stops when t ends.
func Start(t testing.TB, zone ...string) *Server {
	t.Helper()
	s, err := New("127.0.0.1:0", zone...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server on addr with the given records.
func New(addr string, zone ...string) (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, servfail: map[string]bool{}, drop: map[string]bool{}, queries: map[string]int{}}
	if err := s.Add(zone...); err != nil {
		return nil, err
	}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.handleUDP)}
	s.tcp = &dns.Server{Listener: &countingListener{ln, s}, Handler: dns.HandlerFunc(s.handleTCP)}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("testdns: server did not start")
		}
	}
	return s, nil
}

// Add adds records in zone-file presentation form ("a.test. 300 IN TXT ...").
func (s *Server) Add(zone ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, z := range zone {
		rr, err := dns.NewRR(z)
		if err != nil {
			return fmt.Errorf("testdns: %q: %w", z, err)
		}
		if rr == nil {
			continue
		}
		name := strings.ToLower(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	return nil
}

// Remove deletes every record of name (it answers NXDOMAIN again), and
// clears a ServFail or Drop of it.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	n := dns.Fqdn(strings.ToLower(name))
	delete(s.records, n)
	delete(s.servfail, n)
	delete(s.drop, n)
	s.mu.Unlock()
}

// ServFail makes every question about name answer SERVFAIL.
func (s *Server) ServFail(name string) {
	s.mu.Lock()
	s.servfail[dns.Fqdn(strings.ToLower(name))] = true
	s.mu.Unlock()
}

// Drop makes every question about name go unanswered.
func (s *Server) Drop(name string) {
	s.mu.Lock()
	s.drop[dns.Fqdn(strings.ToLower(name))] = true
	s.mu.Unlock()
}

// RefuseTCP closes TCP connections without answering.
func (s *Server) RefuseTCP() { s.mu.Lock(); s.refuseTCP = true; s.mu.Unlock() }

// Queries is how many questions name/TYPE received (UDP and TCP).
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dns.Fqdn(strings.ToLower(name))+"/"+dns.TypeToString[qtype]]
}

// TotalQueries is the number of questions received.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queries {
		n += c
	}
	return n
}

// ResetCounts forgets the query counts.
func (s *Server) ResetCounts() { s.mu.Lock(); s.queries = map[string]int{}; s.mu.Unlock() }

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

func (s *Server) handleUDP(w dns.ResponseWriter, r *dns.Msg) { s.handle(w, r, true) }
func (s *Server) handleTCP(w dns.ResponseWriter, r *dns.Msg) {
	s.mu.Lock()
	refuse := s.refuseTCP
	s.mu.Unlock()
	if refuse {
		w.Close()
		return
	}
	s.handle(w, r, false)
}

func (s *Server) handle(w dns.ResponseWriter, r *dns.Msg, udp bool) {
	if len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries[name+"/"+dns.TypeToString[q.Qtype]]++
	drop, servfail := s.drop[name], s.servfail[name]
	var answer []dns.RR
	exists := false
	records := s.records[name]
	if len(records) == 0 {
		// A wildcard one label up answers for any name below it
		// (RFC 4592, without the finer points).
		if _, parent, ok := strings.Cut(name, "."); ok {
			for _, rr := range s.records["*."+parent] {
				rr = dns.Copy(rr)
				rr.Header().Name = q.Name
				records = append(records, rr)
			}
		}
	}
	for _, rr := range records {
		exists = true
		if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
			answer = append(answer, dns.Copy(rr))
		}
		// Like a recursive server, follow one CNAME to its target.
		if cn, ok := rr.(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME {
			for _, t := range s.records[strings.ToLower(cn.Target)] {
				if t.Header().Rrtype == q.Qtype {
					answer = append(answer, dns.Copy(t))
				}
			}
		}
	}
	if !exists {
		// A name with records below it exists (an empty non-terminal).
		for n := range s.records {
			if strings.HasSuffix(n, "."+name) {
				exists = true
				break
			}
		}
	}
	s.mu.Unlock()
	if drop {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	switch {
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case !exists:
		m.Rcode = dns.RcodeNameError
	default:
		m.Answer = answer
	}
	if len(m.Answer) == 0 && m.Rcode != dns.RcodeServerFailure {
		soa, _ := dns.NewRR(". 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
		m.Ns = append(m.Ns, soa)
	}
	if udp {
		size := 512
		if o := r.IsEdns0(); o != nil {
			size = int(o.UDPSize())
			m.SetEdns0(o.UDPSize(), false)
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// listenBoth opens UDP and TCP on one port; with port 0 it retries when
// the UDP port's TCP twin is taken.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	var err error
	for i := 0; i < 20; i++ {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, nil, err
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if !strings.HasSuffix(addr, ":0") {
			break
		}
	}
	return nil, nil, err
}
