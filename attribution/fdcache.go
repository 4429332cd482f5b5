package attribution

// fdEnt is one socket descriptor of a process.
type fdEnt struct {
	fd    int32
	inode uint32
}

// fdCache is a process's socket descriptors at its last read, in the
// smaller of two forms. Dense: the inode of descriptor lo+i at
// inodes[i], 0 where that descriptor held no socket, when the sockets
// fill at least half of the span of their descriptors, as they do in a
// server holding thousands (4 bytes a socket, where a pair takes 8).
// Sparse otherwise: the (fd, inode) pairs, ascending.
type fdCache struct {
	lo     int32
	dense  bool
	inodes []uint32 // dense
	pairs  []fdEnt  // sparse
}

// store replaces the cache with out (ascending by fd), keeping the
// storage of the form it takes and dropping the other's.
func (c *fdCache) store(out []fdEnt) {
	n := len(out)
	if n == 0 || int64(out[n-1].fd)-int64(out[0].fd) >= 2*int64(n) {
		c.dense, c.inodes = false, nil
		c.pairs = append(c.pairs[:0], out...)
		return
	}
	span := int(out[n-1].fd-out[0].fd) + 1
	if cap(c.inodes) < span {
		c.inodes = make([]uint32, span)
	} else {
		c.inodes = c.inodes[:span]
		clear(c.inodes)
	}
	c.dense, c.pairs, c.lo = true, nil, out[0].fd
	for _, f := range out {
		c.inodes[f.fd-c.lo] = f.inode
	}
}

// cursor returns a cursor at the cache's first descriptor.
func (c *fdCache) cursor() fdCursor { return fdCursor{c: c} }

// fdCursor walks an fdCache's descriptors ascending.
type fdCursor struct {
	c *fdCache
	i int
}

// peek returns the descriptor at the cursor; false past the last.
func (k *fdCursor) peek() (fdEnt, bool) {
	c := k.c
	if !c.dense {
		if k.i < len(c.pairs) {
			return c.pairs[k.i], true
		}
		return fdEnt{}, false
	}
	for ; k.i < len(c.inodes); k.i++ {
		if ino := c.inodes[k.i]; ino != 0 {
			return fdEnt{c.lo + int32(k.i), ino}, true
		}
	}
	return fdEnt{}, false
}

// next returns the descriptor at the cursor and moves past it.
func (k *fdCursor) next() (fdEnt, bool) {
	f, ok := k.peek()
	if ok {
		k.i++
	}
	return f, ok
}
