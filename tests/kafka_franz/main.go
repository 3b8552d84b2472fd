// Command kafka_franz runs franz-go (kgo and kadm, unchanged) against Sluice's Kafka
// listener. Each sub-command runs one flow and prints one JSON object on stdout;
// tests/kafka_franz.rs checks it against what Sluice's own CLI reports. scripts/test.sh
// builds it into target/kafka-franz/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: kafka_franz COMMAND BOOTSTRAP ARGS...")
		os.Exit(2)
	}
	boot := strings.Split(os.Args[2], ",")
	args := os.Args[3:]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out any
	var err error
	switch os.Args[1] {
	case "produce":
		out, err = produce(ctx, boot, args[0], atoi(args[1]), int64(atoi(args[2])))
	case "produce-until":
		out, err = produceUntil(boot, args[0], args[1], time.Duration(atoi(args[2]))*time.Millisecond)
	case "consume-until":
		out, err = consumeUntil(boot, args[0], args[1], time.Duration(atoi(args[2]))*time.Millisecond)
	case "consume":
		out, err = consume(ctx, boot, args[0], atoi(args[1]), atoi(args[2]))
	case "admin-topics":
		out, err = adminTopics(ctx, boot, args[0])
	case "admin-offsets":
		out, err = adminOffsets(ctx, boot, args[0], int64(atoi(args[1])))
	case "admin-delete":
		out, err = adminDelete(ctx, boot, args[0])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka_franz:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "kafka_franz:", err)
		os.Exit(1)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafka_franz: %q is not a number\n", s)
		os.Exit(2)
	}
	return n
}

// errText is what an admin call ended in: "" or its error.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// produce writes records k{i} -> v{i} with header seq=i and timestamp ts0+i through
// franz-go's default producer (idempotent, acks=all, keys hashed as Kafka's Java client
// does), and reports where each landed.
func produce(ctx context.Context, boot []string, topic string, n int, ts0 int64) (any, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(boot...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	type landed struct {
		i         int
		partition int32
		offset    int64
	}
	var (
		mu      sync.Mutex
		records []landed
		errs    []string
		wg      sync.WaitGroup
	)
	for i := 0; i < n; i++ {
		r := &kgo.Record{
			Key:       []byte(fmt.Sprintf("k%d", i)),
			Value:     []byte(fmt.Sprintf("v%d", i)),
			Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}},
			Timestamp: time.UnixMilli(ts0 + int64(i)),
		}
		wg.Add(1)
		i := i
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("v%d: %v", i, err))
				return
			}
			records = append(records, landed{i, r.Partition, r.Offset})
		})
	}
	wg.Wait()
	sort.Slice(records, func(a, b int) bool { return records[a].i < records[b].i })
	rows := make([][3]int64, 0, len(records))
	for _, r := range records {
		rows = append(rows, [3]int64{int64(r.i), int64(r.partition), r.offset})
	}
	return map[string]any{"acked": len(rows), "records": rows, "errors": nonNil(errs)}, nil
}

// produceUntil writes s{i} to partition 0 with the default producer (idempotent,
// acks=all, retries until the delivery timeout) until the file stop exists (or limit
// passes), at most 2000 records unsettled, then reports every acknowledged [i, offset]
// and every record that failed.
func produceUntil(boot []string, topic, stop string, limit time.Duration) (any, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(boot...),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProduceRequestTimeout(3*time.Second),
		kgo.RecordDeliveryTimeout(60*time.Second),
		kgo.MetadataMinAge(250*time.Millisecond),
		// Small batches, several requests in flight (5, idempotent), so some are at the kill.
		kgo.ProducerBatchMaxBytes(4096),
		kgo.MaxBufferedRecords(2000),
		// What the client goes through (disconnects, retries) on stderr, for the test's log.
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx := context.Background()
	var (
		mu     sync.Mutex
		acked  [][2]int64
		failed []string
		wg     sync.WaitGroup
	)
	deadline := time.Now().Add(limit)
	sent := 0
	for ; time.Now().Before(deadline); sent++ {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		i := sent
		wg.Add(1)
		// Blocks while 2000 records are buffered (MaxBufferedRecords).
		cl.Produce(ctx, &kgo.Record{Partition: 0, Value: []byte(fmt.Sprintf("s%d", i))}, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, fmt.Sprintf("s%d: %v", i, err))
				return
			}
			acked = append(acked, [2]int64{int64(i), r.Offset})
		})
	}
	wg.Wait()
	if acked == nil {
		acked = [][2]int64{}
	}
	return map[string]any{"sent": sent, "acked": acked, "failed": nonNil(failed)}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// consume reads partitions 0..partitions-1 of topic from their start by direct
// assignment (no group) until n records arrived or the context ends.
func consume(ctx context.Context, boot []string, topic string, partitions, n int) (any, error) {
	from := map[int32]kgo.Offset{}
	for p := 0; p < partitions; p++ {
		from[int32(p)] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(boot...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rows := [][]any{}
	var fetchErrs []string
	for len(rows) < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fetchErrs = append(fetchErrs, fmt.Sprintf("%s-%d: %v", t, p, err))
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			seq := ""
			for _, h := range r.Headers {
				if h.Key == "seq" {
					seq = string(h.Value)
				}
			}
			rows = append(rows, []any{r.Partition, r.Offset, string(r.Key), string(r.Value), seq, r.Timestamp.UnixMilli()})
		})
	}
	return map[string]any{"records": rows, "errors": nonNil(fetchErrs)}, nil
}

// consumeUntil reads partition 0 of topic from its start by direct assignment until the
// file stop exists and it has reached the end offset it then lists (or limit passes);
// reports every record as [offset, value].
func consumeUntil(boot []string, topic, stop string, limit time.Duration) (any, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(boot...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.RequestTimeoutOverhead(3*time.Second),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(limit)
	rows := [][]any{}
	var fetchErrs []string
	end := int64(-1)
	next := int64(0)
	for time.Now().Before(deadline) {
		if end < 0 {
			if _, err := os.Stat(stop); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ends, err := adm.ListEndOffsets(ctx, topic)
				cancel()
				if err != nil {
					return nil, err
				}
				if o, ok := ends.Lookup(topic, 0); ok && o.Err == nil {
					end = o.Offset
				}
			}
		}
		if end >= 0 && next >= end {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fetchErrs = append(fetchErrs, fmt.Sprintf("%s-%d: %v", t, p, err))
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			rows = append(rows, []any{r.Offset, string(r.Value)})
			next = r.Offset + 1
		})
	}
	return map[string]any{"records": rows, "end": end, "errors": nonNil(fetchErrs)}, nil
}

func admin(boot []string) (*kgo.Client, *kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(boot...))
	if err != nil {
		return nil, nil, err
	}
	return cl, kadm.NewClient(cl), nil
}

func str(s string) *string { return &s }

func describe(td kadm.TopicDetail) map[string]any {
	parts := []map[string]any{}
	for _, p := range td.Partitions.Sorted() {
		parts = append(parts, map[string]any{
			"partition": p.Partition, "leader": p.Leader, "leader_epoch": p.LeaderEpoch,
			"replicas": p.Replicas, "isr": p.ISR, "error": errText(p.Err),
		})
	}
	return map[string]any{
		"id": fmt.Sprintf("%x", td.ID[:]), "internal": td.IsInternal, "partitions": parts,
		"error": errText(td.Err),
	}
}

// adminTopics: CreateTopic (3 partitions, RF 3, configs), the same again, ListTopics,
// Metadata, DescribeCluster, DescribeTopicConfigs, AlterTopicConfigs (incremental),
// UpdatePartitions (3 -> 4), and the answers after.
func adminTopics(ctx context.Context, boot []string, topic string) (any, error) {
	cl, adm, err := admin(boot)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := map[string]any{}
	created, err := adm.CreateTopic(ctx, 3, 3, map[string]*string{
		"retention.ms": str("3600000"), "min.insync.replicas": str("2"),
	}, topic)
	out["create"] = map[string]any{
		"error": errText(errors.Join(err, created.Err)), "id": fmt.Sprintf("%x", created.ID[:]),
		"partitions": created.NumPartitions, "rf": created.ReplicationFactor,
	}
	again, err := adm.CreateTopic(ctx, 3, 3, nil, topic)
	out["create_again"] = errText(errors.Join(err, again.Err))
	listed, err := adm.ListTopics(ctx)
	out["list"] = listed.Names()
	out["list_error"] = errText(err)
	if td, ok := listed[topic]; ok {
		out["describe"] = describe(td)
	}
	missing, err := adm.ListTopics(ctx, "no-such-topic")
	out["describe_missing"] = errText(errors.Join(err, missing["no-such-topic"].Err))

	dc := kmsg.NewPtrDescribeClusterRequest()
	if resp, err := dc.RequestWith(ctx, cl); err != nil {
		out["cluster"] = map[string]any{"error": err.Error()}
	} else {
		brokers := [][]any{}
		for _, b := range resp.Brokers {
			brokers = append(brokers, []any{b.NodeID, fmt.Sprintf("%s:%d", b.Host, b.Port)})
		}
		out["cluster"] = map[string]any{
			"id": resp.ClusterID, "controller": resp.ControllerID, "brokers": brokers,
			"error_code": resp.ErrorCode,
		}
	}
	out["configs"] = configs(ctx, adm, topic)
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: str("7200000")},
		{Op: kadm.DeleteConfig, Name: "min.insync.replicas"},
	}, topic)
	out["alter"] = errText(errors.Join(err, firstAlterErr(altered)))
	out["configs_after"] = configs(ctx, adm, topic)
	grown, err := adm.UpdatePartitions(ctx, 4, topic)
	var growErr error
	for _, r := range grown {
		growErr = errors.Join(growErr, r.Err)
	}
	out["partitions"] = errText(errors.Join(err, growErr))
	after, err := adm.ListTopics(ctx, topic)
	if err != nil {
		out["describe_after"] = map[string]any{"error": err.Error()}
	} else {
		out["describe_after"] = describe(after[topic])
	}
	return out, nil
}

func firstAlterErr(rs kadm.AlterConfigsResponses) error {
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// configs is name -> [value, source] of every config DescribeConfigs returns.
func configs(ctx context.Context, adm *kadm.Client, topic string) any {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return map[string]any{"error": errText(errors.Join(err, rc.Err))}
	}
	m := map[string][2]string{}
	for _, c := range rc.Configs {
		m[c.Key] = [2]string{c.MaybeValue(), c.Source.String()}
	}
	return m
}

// adminOffsets: start, end and after-a-millisecond offsets of every partition.
func adminOffsets(ctx context.Context, boot []string, topic string, at int64) (any, error) {
	cl, adm, err := admin(boot)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	flat := func(l kadm.ListedOffsets, err error) any {
		if err == nil {
			err = l.Error()
		}
		if err != nil {
			return map[string]any{"error": err.Error()}
		}
		m := map[string][2]int64{}
		l.Each(func(o kadm.ListedOffset) {
			m[strconv.Itoa(int(o.Partition))] = [2]int64{o.Offset, o.Timestamp}
		})
		return m
	}
	return map[string]any{
		"start": flat(adm.ListStartOffsets(ctx, topic)),
		"end":   flat(adm.ListEndOffsets(ctx, topic)),
		"after": flat(adm.ListOffsetsAfterMilli(ctx, at, topic)),
	}, nil
}

// adminDelete: DeleteTopics of topic and of one that does not exist; ListTopics after.
func adminDelete(ctx context.Context, boot []string, topic string) (any, error) {
	cl, adm, err := admin(boot)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := map[string]any{}
	deleted, err := adm.DeleteTopics(ctx, topic, "no-such-topic")
	out["delete"] = errText(errors.Join(err, deleted[topic].Err))
	out["delete_missing"] = errText(deleted["no-such-topic"].Err)
	listed, err := adm.ListTopics(ctx)
	out["list_after"] = listed.Names()
	out["list_error"] = errText(err)
	return out, nil
}
