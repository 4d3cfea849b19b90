//go:build linux

package relay

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller waits, with one goroutine (so one OS thread, blocked in
// epoll_wait) and one epoll instance, for many sockets to become readable.
// A relay direction with nothing to send then holds no goroutine (and no
// stack) of its own: an idle public connection costs memory only for what
// the kernel and smux keep. There is one per process (Acquire), shared by
// the relays of every session of every daemon in it: a poller per session
// held an OS thread each, and threads grew with the sessions (issue 21:
// 945 threads for 935 sessions).
//
// arm registers a one-shot wait; when the socket becomes readable (data,
// EOF or an error) its function runs in a new goroutine, once. disarm
// cancels a wait that has not fired. After close every wait still armed
// fires, so that its owner finds out; arm then fails.
type Poller struct {
	epfd, wakefd int
	done         chan struct{} // closed when run returns
	closeOnce    sync.Once

	mu      sync.Mutex
	waiters map[uint64]func()
	next    uint64
	closed  bool
}

// wakeID is the epoll data of the eventfd that wakes run for close.
const wakeID = 0

var errPollerClosed = errors.New("poller closed")

func newPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	p := &Poller{epfd: epfd, wakefd: wakefd, done: make(chan struct{}), waiters: make(map[uint64]func()), next: wakeID + 1}
	go p.run()
	return p, nil
}

func setID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(id)
	ev.Pad = int32(id >> 32)
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (p *Poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil { // cannot happen with a valid epfd; fail every wait
			p.shutdown()
			return
		}
		for i := range events[:n] {
			id := getID(&events[i])
			if id == wakeID {
				p.shutdown()
				return
			}
			p.mu.Lock()
			fn := p.waiters[id]
			delete(p.waiters, id)
			p.mu.Unlock()
			if fn != nil {
				go fn()
			}
		}
	}
}

// shutdown fires every armed wait and refuses new ones.
func (p *Poller) shutdown() {
	p.mu.Lock()
	p.closed = true
	fns := make([]func(), 0, len(p.waiters))
	for id, fn := range p.waiters {
		fns = append(fns, fn)
		delete(p.waiters, id)
	}
	p.mu.Unlock()
	for _, fn := range fns {
		go fn()
	}
}

// arm runs fn once the socket behind rc is readable, and returns the wait's
// id for disarm. added says whether rc's socket is in the epoll set already
// (from an earlier arm): one-shot waits stay registered, disabled, after
// they fire. The registration is level-triggered, so data that arrived
// before arm fires it at once.
func (p *Poller) arm(rc syscall.RawConn, added bool, fn func()) (uint64, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, errPollerClosed
	}
	id := p.next
	p.next++
	p.waiters[id] = fn
	p.mu.Unlock()

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setID(&ev, id)
	op := unix.EPOLL_CTL_ADD
	if added {
		op = unix.EPOLL_CTL_MOD
	}
	var cerr error
	err := rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.mu.Lock()
		delete(p.waiters, id)
		p.mu.Unlock()
		return 0, err
	}
	return id, nil
}

// disarm cancels wait id on rc's socket and removes the socket from the
// epoll set. It reports whether it removed the wait before it fired: false
// means fn has run or is about to.
func (p *Poller) disarm(rc syscall.RawConn, id uint64) bool {
	p.mu.Lock()
	_, armed := p.waiters[id]
	delete(p.waiters, id)
	p.mu.Unlock()
	// Through Control, so the descriptor cannot be closed (and its number
	// reused by another socket) in between; a closed socket left the epoll
	// set by itself.
	rc.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	return armed
}

// close stops the poller: every armed wait fires, run returns, and the
// descriptors are released. Calling it again does nothing.
func (p *Poller) close() {
	p.closeOnce.Do(func() {
		one := [8]byte{1}
		unix.Write(p.wakefd, one[:]) // harmless if run has returned already
		<-p.done
		unix.Close(p.epfd)
		unix.Close(p.wakefd)
	})
}

// shared is the process's poller and how many hold it.
var shared struct {
	mu   sync.Mutex
	p    *Poller
	refs int
}

// Acquire returns the process's poller, starting it when nobody holds it,
// and the function that gives it back; the last release stops it (its
// armed waits fire, and their relays go on with a goroutine each). Daemons
// hold it for the length of their Run. p is nil when epoll is not
// available: relays then hold a goroutine per direction.
func Acquire() (p *Poller, release func()) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.p == nil {
		np, err := newPoller()
		if err != nil {
			return nil, func() {}
		}
		shared.p = np
	}
	shared.refs++
	p = shared.p
	var once sync.Once
	return p, func() {
		once.Do(func() {
			shared.mu.Lock()
			shared.refs--
			last := shared.refs == 0
			if last {
				shared.p = nil
			}
			shared.mu.Unlock()
			if last {
				p.close()
			}
		})
	}
}
