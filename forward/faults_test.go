package forward

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceErrorResponse answers a produce request with code for every
// partition in it.
func produceErrorResponse(req kmsg.Request, code int16) kmsg.Response {
	pr := req.(*kmsg.ProduceRequest)
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	resp.Version = pr.Version
	for _, t := range pr.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = code
			rp.BaseOffset = -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// faultEvery installs a produce control that handles every nth produce
// request with fn, n times in all, and lets the others through.
func faultEvery(c *kfake.Cluster, every, times int, fn func(kmsg.Request) (kmsg.Response, error, bool)) *atomic.Int64 {
	var seen, hits atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if seen.Add(1)%int64(every) != 0 || hits.Load() >= int64(times) {
			return nil, nil, false
		}
		hits.Add(1)
		return fn(req)
	})
	return &hits
}

// TestForwardThroughFaults streams records while the cluster misbehaves,
// then checks that every id arrived and that, per key, first occurrences
// are in outbox order.
func TestForwardThroughFaults(t *testing.T) {
	cases := []struct {
		name string
		// during runs while records stream; it returns once its faults are
		// done and reports how many it injected.
		during func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64
		kinds  []string // error kinds that must have been counted
	}{
		{
			name: "retriable error responses",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				hits := faultEvery(c, 3, 8, func(req kmsg.Request) (kmsg.Response, error, bool) {
					return produceErrorResponse(req, kerr.NotLeaderForPartition.Code), nil, true
				})
				<-stop
				return hits.Load()
			},
		},
		{
			name: "fatal error responses",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				hits := faultEvery(c, 4, 6, func(req kmsg.Request) (kmsg.Response, error, bool) {
					return produceErrorResponse(req, kerr.UnknownServerError.Code), nil, true
				})
				<-stop
				return hits.Load()
			},
			kinds: []string{ErrKindBroker},
		},
		{
			name: "one partition failing",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopics[0], Partitions: []int32{1}, Err: kerr.PolicyViolation, Count: 5})
				<-stop
				return int64(h.Hits())
			},
			kinds: []string{ErrKindBroker},
		},
		{
			name: "dropped responses",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				// No answer: the broker goes silent on the request; only the
				// attempt's deadline (with idempotent cancellation) ends it.
				hits := faultEvery(c, 5, 3, func(kmsg.Request) (kmsg.Response, error, bool) {
					return nil, nil, true
				})
				<-stop
				return hits.Load()
			},
			kinds: []string{ErrKindTimeout},
		},
		{
			name: "silent broker",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				// Every produce request unanswered, several attempts running:
				// without the cancellation the idempotent producer would wait
				// forever on the first.
				hits := faultEvery(c, 1, 4, func(kmsg.Request) (kmsg.Response, error, bool) {
					return nil, nil, true
				})
				<-stop
				return hits.Load()
			},
			kinds: []string{ErrKindTimeout},
		},
		{
			name: "connection closed",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				hits := faultEvery(c, 4, 5, func(kmsg.Request) (kmsg.Response, error, bool) {
					return nil, fmt.Errorf("injected"), true
				})
				<-stop
				return hits.Load()
			},
		},
		{
			name: "leader moves",
			during: func(t *testing.T, c *kfake.Cluster, stop <-chan struct{}) int64 {
				var n int64
				tick := time.NewTicker(40 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return n
					case <-tick.C:
					}
					n++
					if n%2 == 0 {
						c.ShufflePartitionLeaders()
						continue
					}
					if err := c.MoveTopicPartition(testTopics[0], int32(n%3), int32(n%3)); err != nil {
						t.Errorf("move: %v", err)
					}
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			cfg := testConfig(c.ListenAddrs())
			cfg.RequestTimeout = 700 * time.Millisecond
			sums := openTestOutbox(t, t.TempDir(), KindSummaries, cfg.Outbox.Summaries)
			r := startForwarder(t, cfg, sums)
			cons := startConsumer(t, c.ListenAddrs(), testTopics[0])

			stop := make(chan struct{})
			var injected int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				injected = tc.during(t, c, stop)
			}()
			const n = 4000
			for i := 0; i < n; i += 40 {
				appendSeq(t, sums, "s", i, i+40, 13, 40)
				time.Sleep(time.Millisecond) // a stream, not one burst: faults land mid-flow
			}
			waitFor(t, 30*time.Second, "outbox drained", func() (bool, string) {
				s := sums.Stats()
				return s.Depth == 0, fmt.Sprintf("%+v", s)
			})
			close(stop)
			wg.Wait()
			recs := cons.waitIDs(t, 20*time.Second, "s", 0, n)
			checkKeyOrder(t, recs)
			st := r.f.Status()
			t.Logf("injected %d faults; status: sent %d acked %d retries %d errors %v; %d in kafka, %d ids duplicated",
				injected, st.Sent, st.Acked, st.Retries, st.Errors, len(recs), len(duplicates(recs)))
			if injected == 0 {
				t.Fatalf("no fault was injected")
			}
			for _, k := range tc.kinds {
				if st.Errors[k] == 0 {
					t.Errorf("no %s error counted: %v", k, st.Errors)
				}
			}
			if s := sums.Stats(); s.Acked != n || s.Undeliverable != 0 || s.Dropped != 0 {
				t.Errorf("outbox: %+v", s)
			}
		})
	}
	_ = context.Background
}
