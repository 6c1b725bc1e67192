package firmwaresim

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaBrokers: with Brokers 3 the dev Kafka is a cluster of three on
// distinct loopback ports, any of which serves as a seed, and records
// produced through it are counted (the fleet demo's setup).
func TestKafkaBrokers(t *testing.T) {
	k, err := StartKafka(KafkaOptions{Addr: "127.0.0.1:0", Brokers: 3, Partitions: 3, Topics: []string{"runnel.summaries"}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	addrs := k.Addrs()
	if len(addrs) != 3 || addrs[0] != k.Addr() || addrs[0] == addrs[1] || addrs[1] == addrs[2] || addrs[0] == addrs[2] {
		t.Fatalf("Addrs() = %v (Addr %s), want three distinct, Addr first", addrs, k.Addr())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs[2]), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for p := range int32(3) {
		r := &kgo.Record{Topic: "runnel.summaries", Partition: p, Value: []byte("x")}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(cl.DiscoveredBrokers()); n != 3 {
		t.Errorf("the client discovered %d brokers, want 3", n)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		c := k.Counts()
		return c["runnel.summaries"] == 3, countLine(c)
	})
}
