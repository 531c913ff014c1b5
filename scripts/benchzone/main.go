// Command benchzone serves a small DNS zone on loopback for
// scripts/bench-postfix.sh: a sender domain whose SPF record authorizes
// 127.0.0.0/8 and a HELO name whose record passes by its A record.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/senderguard/senderguard/internal/testdns"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:5399", "UDP and TCP address")
	flag.Parse()
	srv, err := testdns.New(*addr,
		`pass.bench.test. 3600 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`pass.bench.test. 3600 IN MX 10 mx.bench.test.`,
		`client.bench.test. 3600 IN TXT "v=spf1 a -all"`,
		`client.bench.test. 3600 IN A 127.0.0.1`,
	)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
