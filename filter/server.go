package filter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"
)

// Server runs the milter protocol (up to version 6) on a listener with
// d--j/go-milter and adds what a production filter needs around it: a
// bounded number of connections, accept errors that back off instead of
// ending the service, a packet size bound, and a drain that serves what
// is already queued before it stops.
type Server struct {
	f    *Filter
	ms   *milter.Server
	opts ServerOptions

	mu        sync.Mutex
	ln        *listener
	serveDone chan struct{}
}

// ServerOptions are the connection-level bounds; they change on restart.
type ServerOptions struct {
	// MaxConnections caps open milter connections; a connection over the
	// cap is closed at once so the MTA applies its default action now
	// instead of waiting for its connect timeout. 0 means 1000.
	MaxConnections int
	// IdleTimeout ends a connection on which the MTA sent nothing for this
	// long (libmilter's default is 7210s); it must stay above the MTA's
	// own SMTP timeouts. 0 means 1h.
	IdleTimeout time.Duration
}

// wantProtocol is what we ask the MTA to leave out, where it can:
// unknown commands, and (protocol 6's SMFIP_NR_*) our replies to the
// stages where we always continue: connect, HELO, DATA, each header field
// and end of headers. The MTA then streams those commands without
// waiting; the listener acknowledges every read at once (TCP_QUICKACK),
// since a delayed ACK (40 ms) would hold the MTA's next packet behind
// Nagle's algorithm (measured before: a session through Postfix took
// 48 ms instead of 7).
//
// The body is asked for, but only a held SPF fail reads it (its DKIM
// signatures are verified): every other message answers its first body
// chunk with SMFIR_SKIP, and the MTA sends no more of it. Header values
// keep their leading space where the MTA can (DKIM's simple
// canonicalization needs the field as it was).
const wantProtocol = milter.OptNoUnknown | milter.OptSkip | milter.OptHeaderLeadingSpace |
	milter.OptNoConnReply | milter.OptNoHeloReply | milter.OptNoDataReply | milter.OptNoHeaderReply | milter.OptNoEOHReply

// wantActions: we insert our headers and delete forged ones.
const wantActions = milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine

// NewServer prepares a milter server for f.
func NewServer(f *Filter, opts ServerOptions) *Server {
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 1000
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Hour
	}
	s := &Server{f: f, opts: opts}
	routeLibraryLog(f)
	s.ms = milter.NewServer(
		milter.WithDynamicMilter(func(uint32, milter.OptAction, milter.OptProtocol, milter.DataSize) milter.Milter {
			return &session{f: f}
		}),
		milter.WithActions(wantActions),
		milter.WithProtocols(wantProtocol),
		milter.WithNegotiationCallback(negotiate),
		milter.WithReadTimeout(opts.IdleTimeout),
	)
	return s
}

// negotiate takes what the MTA offers of what we want: an MTA speaking
// protocol 2 (or one configured not to allow header changes) still gets
// verdicts.
func negotiate(mtaVersion, milterVersion uint32, mtaActions, milterActions milter.OptAction, mtaProtocol, milterProtocol milter.OptProtocol, offered milter.DataSize) (uint32, milter.OptAction, milter.OptProtocol, milter.DataSize, error) {
	version := min(mtaVersion, milterVersion)
	if version < 2 {
		return 0, 0, 0, 0, errors.New("MTA speaks milter protocol version < 2")
	}
	return version, milterActions & mtaActions, milterProtocol & mtaProtocol, milter.DataSize64K, nil
}

// Serve accepts milter connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	l := newListener(ln, s.f, s.opts.MaxConnections)
	done := make(chan struct{})
	s.mu.Lock()
	s.ln, s.serveDone = l, done
	s.mu.Unlock()
	defer close(done)
	err := s.ms.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, milter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting new connections, serves those the kernel has
// already queued, waits for open sessions to end until ctx is done, then
// closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	l, done := s.ln, s.serveDone
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	// Not milter.Server.Shutdown: it refuses connections accepted but not
	// yet started, and closing the listener resets the queued ones.
	l.drain()
	<-done
	l.Listener.Close()
	finished := make(chan struct{})
	go func() { l.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		l.closeAll()
		<-finished
		return ctx.Err()
	}
}

// librarySink is where d--j/go-milter's warnings go. The library has one
// process-wide hook (milter.LogWarning); it is installed once and reports
// to the filter of the newest server.
var (
	librarySink    atomic.Pointer[Filter]
	libraryLogOnce sync.Once
)

func routeLibraryLog(f *Filter) {
	librarySink.Store(f)
	libraryLogOnce.Do(func() {
		milter.LogWarning = func(format string, v ...any) {
			if f := librarySink.Load(); f != nil {
				f.libraryWarning(format, v...)
			}
		}
	})
}

// libraryWarning counts and logs one warning of the milter library: each
// is a protocol error on one connection.
func (f *Filter) libraryWarning(format string, v ...any) {
	kind := "other"
	switch {
	case strings.HasPrefix(format, "Error reading milter command"):
		kind = "read"
	case strings.HasPrefix(format, "Error negotiating"):
		kind = "negotiate"
	case strings.HasPrefix(format, "Error performing milter command"):
		kind = "command"
	case strings.HasPrefix(format, "Error writing packet"):
		kind = "write"
	case strings.HasPrefix(format, "Unrecognized command"):
		kind = "unknown_command"
	}
	f.milterError(kind, format, v...)
}

func (f *Filter) milterError(kind, format string, v ...any) {
	f.deps.Metrics.MilterErrors.WithLabelValues(kind).Inc()
	f.deps.Log.Warn("milter protocol error", "kind", kind, "detail", fmt.Sprintf(format, v...))
}
