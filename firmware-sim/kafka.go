package firmwaresim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaBanner is printed and logged by the dev-only Kafka broker.
const KafkaBanner = "DEV-ONLY Kafka-protocol broker (franz-go kfake): not for production; in-memory, " +
	"everything is lost when it stops"

// DefaultKafkaTopics are the gateway's default topics, created at start.
var DefaultKafkaTopics = []string{"runnel.summaries", "runnel.alerts", "runnel.sketches"}

// KafkaOptions configure the dev-only Kafka broker.
type KafkaOptions struct {
	// Addr is 127.0.0.1:<port> or localhost:<port> (kfake binds the
	// loopback only); port 0 picks one (see KafkaBroker.Addr).
	Addr string
	// Topics are created at start; other topics are created when a
	// client first asks for them.
	Topics []string
	// Partitions per topic (default 1).
	Partitions int
	// Brokers in the cluster (default 1): the first listens on Addr, the
	// others on free loopback ports (see KafkaBroker.Addrs). The fleet demo
	// runs three, so partition leaders and transaction coordinators spread
	// over brokers as they do in a real cluster.
	Brokers int
	// Interval of RunKafka's count line (default 5s).
	Interval time.Duration
}

// KafkaBroker is a kfake cluster (one broker unless KafkaOptions.Brokers)
// plus a consumer that counts the records stored per topic, for `make
// demo` and `make demo-fleet`: it stands in for the
// upstream Kafka of a site so the gateway's forwarder has somewhere to
// deliver. It is not a Kafka: no durability, no limits.
type KafkaBroker struct {
	cluster *kfake.Cluster
	client  *kgo.Client
	addr    string
	addrs   []string
	stop    context.CancelFunc
	done    chan struct{}

	mu     sync.Mutex
	counts map[string]int64
}

// StartKafka starts the broker and its counting consumer.
func StartKafka(opt KafkaOptions) (*KafkaBroker, error) {
	host, portS, err := net.SplitHostPort(opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("kafka addr %q: want 127.0.0.1:port", opt.Addr)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("kafka addr %q: kfake listens on 127.0.0.1 only", opt.Addr)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("kafka addr %q: bad port", opt.Addr)
	}
	parts := opt.Partitions
	if parts <= 0 {
		parts = 1
	}
	ports := []int{port}
	for i := 1; i < opt.Brokers; i++ {
		ports = append(ports, 0)
	}
	kopts := []kfake.Opt{kfake.Ports(ports...), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(parts)}
	if len(opt.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(parts), opt.Topics...))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, errors.New("kafka: kfake reports no listener")
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs[0]),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(".*"),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.MetadataMaxAge(2*time.Second),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kafka counting consumer: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	k := &KafkaBroker{cluster: c, client: cl, addr: addrs[0], addrs: addrs, stop: stop, done: make(chan struct{}), counts: map[string]int64{}}
	for _, t := range opt.Topics {
		k.counts[t] = 0
	}
	go k.consume(ctx)
	return k, nil
}

func (k *KafkaBroker) consume(ctx context.Context) {
	defer close(k.done)
	for ctx.Err() == nil {
		fs := k.client.PollFetches(ctx)
		k.mu.Lock()
		fs.EachTopic(func(t kgo.FetchTopic) {
			t.EachRecord(func(*kgo.Record) { k.counts[t.Topic]++ })
		})
		k.mu.Unlock()
	}
}

// Addr is the broker's host:port.
func (k *KafkaBroker) Addr() string { return k.addr }

// Addrs are the host:port of every broker, Addr first.
func (k *KafkaBroker) Addrs() []string { return slices.Clone(k.addrs) }

// Counts returns the records stored per topic so far (as the consumer has
// read them: a produce shows up within about a fetch wait).
func (k *KafkaBroker) Counts() map[string]int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]int64, len(k.counts))
	for t, n := range k.counts {
		out[t] = n
	}
	return out
}

// Close stops the consumer and the broker; the records are gone.
func (k *KafkaBroker) Close() {
	k.stop()
	<-k.done
	k.client.Close()
	k.cluster.Close()
}

// countLine formats counts as "a=1 b=2 (total 3)", topics sorted.
func countLine(c map[string]int64) string {
	topics := make([]string, 0, len(c))
	var total int64
	for t, n := range c {
		topics = append(topics, t)
		total += n
	}
	slices.Sort(topics)
	var b strings.Builder
	for _, t := range topics {
		fmt.Fprintf(&b, "%s=%d ", t, c[t])
	}
	fmt.Fprintf(&b, "(total %d)", total)
	return b.String()
}

// RunKafka serves the dev-only broker until ctx ends, printing the banner
// and then, every opt.Interval, the records received per topic.
func RunKafka(ctx context.Context, opt KafkaOptions, out io.Writer) error {
	if opt.Interval <= 0 {
		opt.Interval = 5 * time.Second
	}
	k, err := StartKafka(opt)
	if err != nil {
		return err
	}
	defer k.Close()
	fmt.Fprintf(out, "%s\nlistening on %s; topics: %s\n", KafkaBanner, k.Addr(), strings.Join(opt.Topics, ","))
	t := time.NewTicker(opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "kafka (dev-only, in-memory) final: %s\n", countLine(k.Counts()))
			return nil
		case <-t.C:
			fmt.Fprintf(out, "kafka (dev-only, in-memory) records: %s\n", countLine(k.Counts()))
		}
	}
}
