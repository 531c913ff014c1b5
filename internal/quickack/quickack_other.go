//go:build !linux

package quickack

import "net"

// Wrap is Linux-only (TCP_QUICKACK); elsewhere the connection is used
// as it is.
func Wrap(c net.Conn) net.Conn { return c }
