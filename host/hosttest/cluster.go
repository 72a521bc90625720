package hosttest

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a NATS cluster of embedded servers on loopback, each with a
// client port and a route port of its own, as a fleet's brokers are.
type Cluster struct {
	mu       sync.Mutex
	servers  []*server.Server
	urls     []string
	leafURLs []*url.URL
	leaves   []*server.Server
}

// NATSCluster starts n clustered nats-servers on random loopback ports and
// waits until every one has a route to every other, so that interest on
// one is known on all; they are shut down when the test ends. The first
// server is the seed the others route to; they learn of each other from
// it, so the mesh stays whole when any one of them goes. Every server
// also takes leafnode connections, for AddLeaf.
func NATSCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{}
	tb.Cleanup(c.shutdownAll)
	var seed *url.URL
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("nats-%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "agent-host-test",
				Host: "127.0.0.1",
				Port: server.RANDOM_PORT,
			},
			LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT},
		}
		if seed != nil {
			opts.Routes = []*url.URL{seed}
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			tb.Fatalf("hosttest: NATS cluster server %d: %v", i, err)
		}
		srv.Start()
		if !srv.ReadyForConnections(readyTimeout) {
			srv.Shutdown()
			tb.Fatalf("hosttest: NATS cluster server %d not ready within %s", i, readyTimeout)
		}
		if seed == nil {
			addr := srv.ClusterAddr()
			seed = &url.URL{Scheme: "nats-route", Host: net.JoinHostPort(addr.IP.String(), fmt.Sprint(addr.Port))}
		}
		c.servers = append(c.servers, srv)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port))
		c.leafURLs = append(c.leafURLs, &url.URL{Scheme: "nats-leaf", Host: leafAddr(srv)})
	}
	c.WaitForRoutes(tb)
	return c
}

// AddLeaf starts a nats-server that joins the cluster as a leafnode, as a
// site's local broker does: it knows every cluster server's leafnode port,
// connects to the first-th server first and moves to another when the one
// it is on goes. It returns the server and its client URL once the
// leafnode connection is up; the server is shut down when the test ends.
func (c *Cluster) AddLeaf(tb testing.TB, first int) (*server.Server, string) {
	tb.Helper()
	c.mu.Lock()
	remotes := []*url.URL{c.leafURLs[first]}
	for i, u := range c.leafURLs {
		if i != first {
			remotes = append(remotes, u)
		}
	}
	c.mu.Unlock()
	srv, err := server.NewServer(&server.Options{
		ServerName: fmt.Sprintf("leaf-%d", len(c.leaves)),
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		LeafNode: server.LeafNodeOpts{
			Remotes:           []*server.RemoteLeafOpts{{URLs: remotes, NoRandomize: true}},
			ReconnectInterval: 100 * time.Millisecond,
		},
	})
	if err != nil {
		tb.Fatalf("hosttest: NATS leafnode server: %v", err)
	}
	srv.Start()
	tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(readyTimeout) {
		tb.Fatalf("hosttest: NATS leafnode server not ready within %s", readyTimeout)
	}
	c.mu.Lock()
	c.leaves = append(c.leaves, srv)
	c.mu.Unlock()
	WaitForLeaf(tb, srv)
	return srv, fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
}

// WaitForLeaf waits until the leafnode server srv is connected to the
// cluster.
func WaitForLeaf(tb testing.TB, srv *server.Server) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for srv.NumLeafNodes() == 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("hosttest: the leafnode server did not connect to the cluster within %s", readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leafAddr(srv *server.Server) string {
	// The listener's address is only in the varz.
	vz, err := srv.Varz(nil)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(vz.LeafNode.Host, fmt.Sprint(vz.LeafNode.Port))
}

// URLs are the client URLs of every server, stopped ones included, in
// the order they were started.
func (c *Cluster) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.urls...)
}

// Server returns the i-th server; nil once Shutdown(i) stopped it.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Running are the indexes of the servers still up.
func (c *Cluster) Running() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, s := range c.servers {
		if s != nil {
			out = append(out, i)
		}
	}
	return out
}

// Shutdown stops the i-th server and waits until it has: its clients are
// disconnected and its routes to the others are gone.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	srv := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// WaitForRoutes waits until every running server has a route to every
// other running server.
func (c *Cluster) WaitForRoutes(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		running := c.Running()
		whole := true
		for _, i := range running {
			if peers(c.Server(i)) < len(running)-1 {
				whole = false
			}
		}
		if whole {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("hosttest: NATS cluster routes did not form within %s", readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// peers counts the servers srv has a route to: with route pooling a peer
// has several route connections.
func peers(srv *server.Server) int {
	if srv == nil {
		return 0
	}
	rz, err := srv.Routez(nil)
	if err != nil {
		return 0
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true
	}
	return len(ids)
}

func (c *Cluster) shutdownAll() {
	for _, i := range c.Running() {
		c.Shutdown(i)
	}
}
