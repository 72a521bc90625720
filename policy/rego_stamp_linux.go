package policy

import (
	"io/fs"
	"syscall"
	"time"
)

// fileStamp is what a stat says of a file's content: equal stamps mean an
// unchanged file, once it has settled (see regoSettle). The change time is
// in it because no one can set it back, as touch or rsync can the
// modification time; the inode because editors replace files.
type fileStamp struct {
	size         int64
	mtime, ctime int64
	ino, dev     uint64
}

func stampOf(fi fs.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ctime = st.Ctim.Nano()
		s.ino, s.dev = st.Ino, uint64(st.Dev)
	}
	return s
}

// changed is when the file last changed.
func (s fileStamp) changed() time.Time {
	return time.Unix(0, max(s.mtime, s.ctime))
}
