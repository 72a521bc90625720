package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// notifier tells systemd (Type=notify) how the service is doing: READY=1
// once the host serves, RELOADING=1 and READY=1 around a SIGHUP reload,
// STOPPING=1 when the drain starts. Without $NOTIFY_SOCKET, as outside
// systemd, it does nothing.
type notifier struct{ addr string }

// newNotifier takes $NOTIFY_SOCKET out of the environment, so that no
// program the host starts can speak for the service.
func newNotifier() notifier {
	n := notifier{addr: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	return n
}

// notify sends one state datagram. A name starting with @ is in Linux's
// abstract namespace, which package net handles.
func (n notifier) notify(state string) error {
	if n.addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", n.addr, err)
	}
	defer conn.Close()
	// A datagram either fits the socket's buffer or fails; the deadline
	// only guards against a service manager that stopped reading.
	if err := conn.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", n.addr, err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", n.addr, err)
	}
	return nil
}
