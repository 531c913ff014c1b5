// Package deploy holds what an operator copies (Postfix and Sendmail
// snippets, compose, Kubernetes, systemd, monitoring); its test checks
// those files the way the tools that read them would.
package deploy
