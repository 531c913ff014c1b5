package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/config"
)

// startAdmin serves cache show and forget for store on addr (loopback,
// checked by config): GET /cache?q=X lists, DELETE /cache?q=X forgets.
func startAdmin(addr string, store cache.Store, logger *slog.Logger) *http.Server {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/cache", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("q")
		if q == "" {
			http.Error(w, "want ?q=ADDRESS or ?q=DOMAIN", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var out any
		var err error
		switch r.Method {
		case http.MethodGet:
			out, err = callout.Lookup(ctx, store, q)
		case http.MethodDelete:
			var n int
			n, err = callout.Forget(ctx, store, q)
			out = map[string]int{"removed": n}
			if err == nil {
				logger.Info("cache entries forgotten", "query", q, "removed", n)
			}
		default:
			http.Error(w, "GET or DELETE", http.StatusMethodNotAllowed)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error("admin listen failed; cache show/forget need -redis", "addr", addr, "err", err)
		return nil
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server", "err", err)
		}
	}()
	return srv
}

// runCache is "senderguard cache show|forget ADDRESS|DOMAIN": on Redis
// directly with -redis, else on a running instance through -admin. Exit
// status 0 when something was shown or removed, 1 when nothing applied,
// 2 on errors.
func runCache(args []string) int {
	usage := func() {
		fmt.Fprintln(os.Stderr, "usage: senderguard cache show|forget [-config FILE] [-redis URL | -admin HOST:PORT] ADDRESS|DOMAIN")
	}
	if len(args) == 0 || (args[0] != "show" && args[0] != "forget") {
		usage()
		return 2
	}
	op := args[0]
	fs := flag.NewFlagSet("cache "+op, flag.ContinueOnError)
	fs.Usage = func() { usage(); fs.PrintDefaults() }
	path := fs.String("config", "", "YAML config file (for the redis and admin settings)")
	ov := config.BindFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		usage()
		return 2
	}
	q := fs.Arg(0)
	cfg, err := loadConfig(*path, ov, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard cache:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var shown []callout.Shown
	removed := 0
	if cfg.Redis.URL != "" {
		shown, removed, err = cacheOnRedis(ctx, cfg, op, q)
	} else {
		shown, removed, err = cacheOnAdmin(ctx, cfg.AdminListen, op, q)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard cache:", err)
		return 2
	}
	if op == "forget" {
		fmt.Printf("%d entries removed\n", removed)
		if removed == 0 {
			return 1
		}
		return 0
	}
	for _, s := range shown {
		fmt.Println(s)
	}
	if len(shown) == 0 {
		fmt.Println("no cached entry applies")
		return 1
	}
	return 0
}

func cacheOnRedis(ctx context.Context, cfg *config.Config, op, q string) ([]callout.Shown, int, error) {
	opts, err := redisOptions(cfg)
	if err != nil {
		return nil, 0, err
	}
	opts.Timeout = 2 * time.Second // an operator waits; a session does not
	r, err := cache.NewRedis(opts)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	if op == "forget" {
		n, err := callout.Forget(ctx, r, q)
		return nil, n, err
	}
	shown, err := callout.Lookup(ctx, r, q)
	return shown, 0, err
}

func cacheOnAdmin(ctx context.Context, addr, op, q string) ([]callout.Shown, int, error) {
	if addr == "" {
		return nil, 0, errors.New("no -redis and no -admin address: nothing to ask")
	}
	method := http.MethodGet
	if op == "forget" {
		method = http.MethodDelete
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/cache?q="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("running instance at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var msg [512]byte
		n, _ := resp.Body.Read(msg[:])
		return nil, 0, fmt.Errorf("%s: %s", resp.Status, msg[:n])
	}
	if op == "forget" {
		var out struct{ Removed int }
		err := json.NewDecoder(resp.Body).Decode(&out)
		return nil, out.Removed, err
	}
	var shown []callout.Shown
	err = json.NewDecoder(resp.Body).Decode(&shown)
	return shown, 0, err
}
