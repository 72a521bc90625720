package security

import (
	"container/list"
	"crypto/rsa"
	"sync"
	"time"
)

// cacheKey names one certificate check: the exact pubcert text and the
// certname it was checked for.
type cacheKey struct {
	cert     [32]byte
	certname string
}

// certEntry is the outcome of a successful certificate check. Entries are
// never modified once cached.
type certEntry struct {
	pub        *rsa.PublicKey
	privileged bool
	// notBefore and notAfter bound the verified chain's validity.
	notBefore, notAfter time.Time
}

// certCache is a bounded LRU of certificate checks. A nil cache misses
// every lookup and stores nothing.
type certCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cacheItem, most recently used first
	items map[cacheKey]*list.Element
}

type cacheItem struct {
	key cacheKey
	ent *certEntry
}

func newCertCache(size int) *certCache {
	return &certCache{max: size, order: list.New(), items: make(map[cacheKey]*list.Element, size)}
}

// get returns the entry for k if it is still within its validity at now.
func (c *certCache) get(k cacheKey, now time.Time) *certEntry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil
	}
	ent := el.Value.(*cacheItem).ent
	if now.Before(ent.notBefore) || now.After(ent.notAfter) {
		c.order.Remove(el)
		delete(c.items, k)
		return nil
	}
	c.order.MoveToFront(el)
	return ent
}

// put stores an entry, evicting the least recently used one when full.
func (c *certCache) put(k cacheKey, ent *certEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*cacheItem).ent = ent
		c.order.MoveToFront(el)
		return
	}
	if c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheItem).key)
	}
	c.items[k] = c.order.PushFront(&cacheItem{key: k, ent: ent})
}
