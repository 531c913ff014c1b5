package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/config/policydspf"
)

// runImport: senderguard import policyd-spf FILE prints the senderguard
// configuration that decides as policyd-spf does with FILE; what it
// could not translate exactly goes to standard error.
func runImport(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintf(stdout, "usage: senderguard %s\n\n%s\n", commands["import"].usage,
			"Prints, on standard output, the senderguard configuration that makes the same decisions\n"+
				"as policyd-spf (spf-engine 3.x) with FILE, each setting commented with the option it came\n"+
				"from; options it cannot honour are named on standard error with the reason.")
		return 0
	}
	if len(args) != 2 || args[0] != "policyd-spf" {
		fmt.Fprintln(stderr, "usage: senderguard", commands["import"].usage)
		return 2
	}
	file := args[1]
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintln(stderr, "senderguard import:", err)
		return 1
	}
	defer f.Close()
	opts, notes, err := policydspf.Parse(f, file)
	if err == nil && len(opts) == 0 {
		err = fmt.Errorf("%s: %w", file, policydspf.ErrNotPolicydSPF)
	}
	var s *policydspf.Settings
	if err == nil {
		s, err = policydspf.Read(opts, file)
	}
	if err != nil {
		fmt.Fprintln(stderr, "senderguard import:", err)
		return 1
	}
	out, more := s.YAML(file)
	// What we print must load: a value that passed policyd-spf's rules
	// but not senderguard's is an error here, not at the next start.
	if _, err := config.Parse(file+" (imported)", []byte(out)); err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			err = fmt.Errorf("the imported setting %s cannot be used: %s", fe.Path, fe.Reason)
		}
		fmt.Fprintln(stderr, "senderguard import:", err)
		return 1
	}
	for _, n := range append(append(notes, s.Unsupported...), more...) {
		fmt.Fprintln(stderr, "senderguard import:", n)
	}
	fmt.Fprint(stdout, out)
	return 0
}
