package windows

// link is an element's membership in an intrusive list.
type link[T any] struct {
	prev, next *T
	in         bool
}

// linked is a pointer to an element that carries a link.
type linked[T any] interface {
	*T
	node() *link[T]
}

// list is an intrusive doubly linked list, oldest first: the active devices
// by last ingest and the series by last applied reading, so the idle and
// TTL checks stop at the first element still fresh.
type list[T any, P linked[T]] struct {
	head, tail *T
}

// pushBack moves x to the back, adding it if absent.
func (l *list[T, P]) pushBack(x *T) {
	n := P(x).node()
	if n.in {
		if l.tail == x {
			return
		}
		l.remove(x)
	}
	n.prev, n.next, n.in = l.tail, nil, true
	if l.tail != nil {
		P(l.tail).node().next = x
	} else {
		l.head = x
	}
	l.tail = x
}

// remove takes x out of the list if it is in it.
func (l *list[T, P]) remove(x *T) {
	n := P(x).node()
	if !n.in {
		return
	}
	if n.prev != nil {
		P(n.prev).node().next = n.next
	} else {
		l.head = n.next
	}
	if n.next != nil {
		P(n.next).node().prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next, n.in = nil, nil, false
}

func (d *device) node() *link[device] { return &d.act }
func (s *series) node() *link[series] { return &s.ttl }
