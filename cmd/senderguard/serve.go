package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/metrics"
)

// loadConfig reads path (or the embedded defaults) and applies the flags.
// A reload (settle > 0) reads the file as config.LoadSettled does.
func loadConfig(path string, ov *config.Overrides, settle time.Duration) (*config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if settle > 0 {
			cfg, err = config.LoadSettled(path, settle)
		} else {
			cfg, err = config.Load(path)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ov.Apply(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(cfg *config.Config, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	setLevel(level, cfg)
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func setLevel(level *slog.LevelVar, cfg *config.Config) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(cfg.Log.Level))
	level.Set(l)
}

// configFlags parses the -config flag and every setting's flag, and loads
// the configuration; code is the exit status when cfg is nil.
func configFlags(name string, args []string) (cfg *config.Config, path string, ov *config.Overrides, code int) {
	cfg, path, ov, _, code = configFlagSet(name, args, nil, false)
	return cfg, path, ov, code
}

// configFlagSet is configFlags with a command's own flags (bind) and,
// with positional, arguments after the flags (returned in rest).
func configFlagSet(name string, args []string, bind func(*flag.FlagSet), positional bool) (cfg *config.Config, path string, ov *config.Overrides, rest []string, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	p := fs.String("config", "", "YAML config file (default: embedded defaults)")
	cmd := commands[name]
	// Every setting is a flag of every command (scripts pass the service's
	// flags to spf and probe too); -h lists those the command reads.
	ov = config.BindFlags(fs)
	if bind != nil {
		bind(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: senderguard %s\n\n%s\n", cmd.usage, cmd.about)
		if cmd.uses != nil {
			fmt.Fprintln(fs.Output(), "\nThe settings below are those this command reads; \"senderguard serve -h\" lists them all.")
		}
		config.PrintFlags(fs, fs.Output(), cmd.uses)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, "", nil, nil, 0
		}
		return nil, "", nil, nil, 2
	}
	if cmd.uses != nil {
		fs.Visit(func(f *flag.Flag) {
			if config.FlagSection(f.Name) != "" && !cmd.uses(f.Name) {
				fmt.Fprintf(os.Stderr, "senderguard %s: warning: -%s is not a setting %s reads; ignored\n", name, f.Name, name)
			}
		})
	}
	if fs.NArg() > 0 && !positional {
		// "IMAGE version" against an entrypoint that says serve would
		// otherwise start a server.
		fmt.Fprintf(os.Stderr, "senderguard %s: unexpected argument %q (flags only)\n", name, fs.Arg(0))
		return nil, "", nil, nil, 2
	}
	cfg, err := loadConfig(*p, ov, 0)
	if err == nil && cfg.MetricsWebConfig != "" {
		if err = web.Validate(cfg.MetricsWebConfig); err != nil {
			err = fmt.Errorf("metrics_web_config %s: %w", cfg.MetricsWebConfig, err)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard: invalid configuration:", err)
		return nil, "", nil, nil, 1
	}
	return cfg, *p, ov, fs.Args(), 0
}

func runCheckConfig(args []string) int {
	cfg, _, _, code := configFlags("check-config", args)
	if cfg == nil {
		return code
	}
	out, err := cfg.Marshal()
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard:", err)
		return 1
	}
	os.Stdout.Write(out)
	return 0
}

func runServe(args []string) int {
	cfg, path, ov, code := configFlags("serve", args)
	if cfg == nil {
		return code
	}
	level := new(slog.LevelVar)
	logger := newLogger(cfg, level)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg, version)

	q, err := newQuerier(cfg.DNS, metricHooks(m))
	if err != nil {
		logger.Error("DNS resolver", "err", err)
		return 1
	}
	deps := filter.Deps{
		SPF:     &spf.Checker{Resolver: q, Receiver: cfg.Host(), VoidLimit: cfg.SPF.VoidLimit},
		DKIM:    &dkim.Verifier{Resolver: q},
		DMARC:   &dmarc.Finder{Resolver: q},
		Log:     logger,
		Metrics: m,
	}
	verifier, stopVerifier, err := newVerifier(cfg, q, m, logger)
	if err != nil {
		logger.Error("callout", "err", err)
		return 1
	}
	defer stopVerifier()
	var admin *http.Server
	if verifier != nil {
		deps.Callout = verifier
		admin = startAdmin(cfg.AdminListen, verifier.Store(), logger)
	}
	f := filter.New(cfg, deps)

	network, addr := config.SocketAddr(cfg.Listen)
	if network == "unix" {
		_ = os.Remove(addr) // a stale socket from an earlier run
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		logger.Error("milter listen", "listen", cfg.Listen, "err", err)
		return 1
	}
	if network == "unix" {
		if err := socketPermissions(addr, cfg.ListenMode, cfg.ListenGroup); err != nil {
			logger.Error("milter socket", "listen", cfg.Listen, "err", err)
			return 1
		}
	}
	if h := cfg.Host(); !config.Qualified(h) {
		// Our name goes into the authserv-id, Received-SPF and the EHLO of
		// probes: a pod name there breaks DMARC verifiers' trust lists.
		logger.Warn("hostname is not a fully qualified domain name; set hostname (and authserv_id)", "hostname", h)
		m.HostnameUnqualified.Set(1)
	}
	srv := filter.NewServer(f, filter.ServerOptions{MaxConnections: cfg.MilterMaxConnections, IdleTimeout: cfg.MilterIdleTimeout.D()})
	var ready atomic.Bool
	httpSrv := startHTTP(cfg.MetricsListen, cfg.MetricsWebConfig, reg, &ready, logger)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	ready.Store(true)
	logger.Info("senderguard serving", "version", version, "listen", cfg.Listen, "metrics", cfg.MetricsListen, "dry_run", cfg.DryRun, "config", path)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-serveErr:
			if err != nil {
				logger.Error("milter server stopped", "err", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(f, path, ov, level, m, logger)
				continue
			}
			logger.Info("draining", "signal", sig.String(), "grace", f.Config().ShutdownGrace.D())
			ready.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), f.Config().ShutdownGrace.D())
			err := srv.Shutdown(ctx)
			cancel()
			for _, hs := range []*http.Server{httpSrv, admin} {
				if hs != nil {
					sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
					_ = hs.Shutdown(sctx)
					scancel()
				}
			}
			if err != nil {
				logger.Warn("drain ended by grace period; open sessions closed", "err", err)
			}
			logger.Info("stopped")
			return 0
		}
	}
}

// socketPermissions gives a unix milter socket its mode and group, so that
// only the MTA's group can connect.
func socketPermissions(path, mode, group string) error {
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		return err
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return err
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			return err
		}
	}
	return os.Chmod(path, os.FileMode(m))
}

// reloadSettle is how long a reload waits to see the file unchanged.
const reloadSettle = 200 * time.Millisecond

// reload swaps in a new configuration, or keeps the old one when the new
// one is broken.
func reload(f *filter.Filter, path string, ov *config.Overrides, level *slog.LevelVar, m *metrics.Metrics, logger *slog.Logger) {
	cfg, err := loadConfig(path, ov, reloadSettle)
	if err != nil {
		m.ConfigReloads.WithLabelValues("failure").Inc()
		logger.Error("reload failed; keeping the running configuration", "err", err)
		return
	}
	if changed := config.RestartNeeded(f.Config(), cfg); len(changed) > 0 {
		logger.Warn("these settings change only on restart; the running values stay", "settings", strings.Join(changed, ","))
	}
	f.Apply(cfg)
	setLevel(level, cfg)
	m.ConfigReloads.WithLabelValues("success").Inc()
	logger.Info("configuration reloaded", "config", path, "dry_run", cfg.DryRun)
}

// startHTTP serves /metrics, /healthz and /readyz on addr, behind the TLS
// and basic auth of webConfig when given (exporter-toolkit's web package,
// as Prometheus exporters do).
func startHTTP(addr, webConfig string, reg *prometheus.Registry, ready *atomic.Bool, logger *slog.Logger) *http.Server {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error("metrics listen failed; serving mail without metrics", "addr", addr, "err", err)
		return nil
	}
	no := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: &no, WebConfigFile: &webConfig}
	webLog := logger.With("component", "metrics-web")
	go func() {
		if err := web.Serve(ln, srv, flags, webLog); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "err", err)
		}
	}()
	return srv
}
