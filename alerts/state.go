package alerts

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/cespare/xxhash/v2"
)

// phase is where a state machine stands.
type phase uint8

const (
	inactive phase = iota
	pending
	firing
)

func (p phase) String() string {
	switch p {
	case pending:
		return "pending"
	case firing:
		return "firing"
	}
	return "inactive"
}

// stateKey identifies a state machine. The rule pointer stands for the
// rule's name and definition: Reload re-keys the states it keeps.
type stateKey struct {
	r             *rule
	series, field string
}

// state is one (rule, series, field) state machine.
//
// Threshold rules: lastT is the newest event time evaluated (reading time
// or window end), start the event time the condition began, since the time
// it entered its phase, edge the threshold of the alert in progress.
// Missing rules: start is the processing time of the last reading, since
// the processing time at which it fired, edge the For in seconds.
type state struct {
	key   stateKey
	phase phase
	hasT  bool
	lastT int64
	start int64
	since int64
	value float64
	edge  float64
	id    string // the alert's id while pending or firing

	// touch orders the evictable lists: every change of a listed state
	// takes the next value of Engine.touch, so a list is sorted by touch
	// and a checkpoint can rebuild it exactly.
	touch      uint64
	prev, next *state
	in         *list
}

// list is an intrusive doubly linked list of states, oldest touch first.
type list struct {
	head, tail *state
	n          int
}

func (l *list) pushBack(s *state) {
	s.prev, s.next, s.in = l.tail, nil, l
	if l.tail != nil {
		l.tail.next = s
	} else {
		l.head = s
	}
	l.tail = s
	l.n++
}

func (l *list) remove(s *state) {
	if s.in != l {
		return
	}
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next, s.in = nil, nil, nil
	l.n--
}

// elapsed returns b - a for b >= a without overflow (0 when b < a).
func elapsed(a, b int64) uint64 {
	if b < a {
		return 0
	}
	return uint64(b) - uint64(a)
}

// alertID derives the stable id of an alert from the gateway, rule,
// series, field and start time: every input is length-prefixed so
// different inputs cannot collide by concatenation.
func alertID(buf []byte, gw, rule, series, field string, start int64) (string, []byte) {
	b := buf[:0]
	for _, s := range [...]string{gw, rule, series, field} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(start))
	var h [8]byte
	binary.BigEndian.PutUint64(h[:], xxhash.Sum64(b))
	return hex.EncodeToString(h[:]), b
}
