//go:build !linux

package policy

import (
	"io/fs"
	"time"
)

// fileStamp is what a stat says of a file's content: equal stamps mean an
// unchanged file, once it has settled (see regoSettle). Off Linux it has
// only the size and modification time.
type fileStamp struct {
	size, mtime int64
}

func stampOf(fi fs.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

// changed is when the file last changed.
func (s fileStamp) changed() time.Time { return time.Unix(0, s.mtime) }
