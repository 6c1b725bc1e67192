package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/runnel-iot/runnel/alerts"
)

// Configuration changes (a SIGHUP reload, a restart with another config)
// must neither lose nor invent outputs:
//
//   - Every outbox record's origin carries a fingerprint of the
//     configuration that produced it (windows specs for summaries and
//     sketches; those and the alert rules for alerts). At start, an outbox
//     whose newest record came from another configuration than the one the
//     replay runs under is not matched by position: the replayed outputs
//     are appended (consumers drop repeats by their deterministic ids),
//     never skipped as "already emitted".
//   - The checkpoint holds the alert rules in force; a replay runs under
//     them, so readings are judged by the rules they first were, and the
//     configured rules are applied once it caught up, as a reload.
//   - A reload is followed at once by a checkpoint, so no replay crosses
//     it; an alert whose rule it changed or removed while it fired ends
//     with a resolved event carrying the reason, on every outlet (outbox,
//     OnAlert: MQTT and its retained topic, live stream).

// fingerprint computes the fingerprint of each record kind from the
// configuration in force.
func (p *Pipeline) fingerprint() {
	w := fingerprintJSON(0, p.cfg)
	a := fingerprintJSON(w, p.alertsCfg.Rules)
	for k := range Kinds {
		p.fps[k] = w
		if Kinds[k].rules {
			p.fps[k] = a
		}
	}
}

func fingerprintAlerts(c alerts.Config) uint64 { return fingerprintJSON(0, c.Rules) }

// fingerprintJSON hashes seed and the JSON of v (maps are written with
// sorted keys, so equal configurations hash equal).
func fingerprintJSON(seed uint64, v any) uint64 {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal config for its fingerprint: " + err.Error())
	}
	h := fnv.New64a()
	h.Write(binary.LittleEndian.AppendUint64(nil, seed))
	h.Write(b)
	return h.Sum64()
}

func encodeAlertsConfig(c alerts.Config) []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic("BUG: marshal alerts config: " + err.Error())
	}
	return b
}

func decodeAlertsConfig(b []byte) (alerts.Config, error) {
	var c alerts.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return alerts.Config{}, fmt.Errorf("checkpoint alert rules: %w", err)
	}
	return c, nil
}

// lastOutboxPos reads the origin of the newest record of an outbox and
// the fingerprint it carries (hasFP false: none).
func lastOutboxPos(box Outbox) (pos outboxPos, fp uint64, hasFP bool, err error) {
	rec, ok, err := box.Last()
	if err != nil || !ok {
		return outboxPos{}, 0, false, err // empty, or the last record was damaged: re-emit from the checkpoint
	}
	pos, fp, hasFP, ok = decodeOrigin(rec.Origin)
	if !ok {
		// Not written by this pipeline (or damaged): outputs after the
		// checkpoint are appended again; consumers drop duplicates by id.
		return outboxPos{}, 0, false, nil
	}
	return pos, fp, hasFP, nil
}

// State is checkpointed as one blob after a magic and a version byte.
// Version 3 (written now): the alerts state and the alert rules in force
// as JSON, each length-prefixed, then the windows state to the end: it is
// streamed (windows.Checkpoint) and its length is not known when the
// header is written. Versions 1 (windows, alerts) and 2 (windows, alerts,
// rules), each part length-prefixed, are still read.
const (
	stateMagic   = "RNST"
	stateVersion = 3
)

// encodeStateHead is a version 3 state blob up to the windows state.
func encodeStateHead(a, rules []byte) []byte {
	b := make([]byte, 0, len(stateMagic)+1+2*binary.MaxVarintLen64+len(a)+len(rules))
	b = append(append(b, stateMagic...), stateVersion)
	for _, part := range [][]byte{a, rules} {
		b = binary.AppendUvarint(b, uint64(len(part)))
		b = append(b, part...)
	}
	return b
}

// encodeState is a whole version 3 state blob.
func encodeState(w, a, rules []byte) []byte {
	return append(encodeStateHead(a, rules), w...)
}

// decodeState splits a state blob; rules is nil in a version 1 blob.
func decodeState(b []byte) (w, a, rules []byte, err error) {
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok || len(rest) == 0 {
		return nil, nil, nil, errors.New("not a gateway state checkpoint")
	}
	version := rest[0]
	rest = rest[1:]
	if version < 1 || version > stateVersion {
		return nil, nil, nil, fmt.Errorf("gateway state checkpoint: unknown version %d", version)
	}
	part := func() []byte {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			ok = false
			return nil
		}
		p := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return p
	}
	if version == 3 {
		a, rules = part(), part()
		w, rest = rest, nil
	} else {
		w, a = part(), part()
		if version == 2 {
			rules = part()
		}
	}
	if !ok || len(rest) != 0 {
		return nil, nil, nil, errors.New("gateway state checkpoint: bad part lengths")
	}
	return w, a, rules, nil
}

// reloadSeq is where the sequence numbers of the events a reload emits
// start: after any the batch at the same index emitted.
const reloadSeq = 1 << 30

// reload replaces the alert rules (between two batches). Alerts firing
// under a rule that the reload changed or removed end with a resolved
// event carrying the reason; then a checkpoint is written at once.
func (p *Pipeline) reload(ctx context.Context, cfg alerts.Config) error {
	firing := map[string]alerts.Alert{}
	for _, a := range p.alerts.Active() {
		if a.State == "firing" {
			firing[a.ID] = a
		}
	}
	if err := p.alerts.Reload(cfg); err != nil {
		return err
	}
	p.alertsCfg, p.configured, p.pending = cfg, cfg, nil
	p.fingerprint()
	for _, a := range p.alerts.Active() {
		delete(firing, a.ID)
	}
	rules := map[string]bool{}
	for _, r := range cfg.Rules {
		rules[r.Name] = true
	}
	ended := make([]alerts.Alert, 0, len(firing))
	for _, a := range firing {
		ended = append(ended, a)
	}
	slices.SortFunc(ended, func(x, y alerts.Alert) int {
		return cmp.Or(cmp.Compare(x.Rule, y.Rule), cmp.Compare(x.Series, y.Series), cmp.Compare(x.Field, y.Field))
	})
	applied := p.engine.AppliedIndex()
	if applied != p.reloadAt {
		p.reloadAt, p.reloadN = applied, 0
	}
	events := make([]alerts.Event, 0, len(ended))
	for _, a := range ended {
		reason := alerts.ReasonRuleRemoved
		if rules[a.Rule] {
			reason = alerts.ReasonRuleChanged
		}
		at := max(p.lastIngest, a.LastNs)
		events = append(events, alerts.Event{
			ID: a.ID, Type: alerts.Resolved, Rule: a.Rule, Series: a.Series, Field: a.Field,
			Severity: a.Severity, Labels: a.Labels, Value: a.Value, Threshold: a.Threshold, Op: a.Op,
			StartNs: a.StartNs, AtNs: at, Gateway: p.gatewayID,
			Index: applied, Seq: reloadSeq + p.reloadN, Reason: reason,
		})
		p.reloadN++
		p.logger.Info("alert resolved by a reload", "rule", a.Rule, "series", a.Series, "field", a.Field, "reason", reason)
	}
	p.alerts.Record(events)
	p.queue(nil, events)
	if err := p.flush(); err != nil {
		p.logger.Error("reload: resolved events not durable; the checkpoint waits", "err", err)
		return nil // the rules are in force; the next flush emits them
	}
	p.checkpointNow(ctx, true)
	return nil
}
