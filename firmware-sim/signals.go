package firmwaresim

import (
	"math"
	"math/rand/v2"
)

// Signal models. Every model is a function of event time (seconds since
// the run's event origin) and of random streams seeded from the device, so
// a device's data do not depend on wall time, scheduling or on which other
// faults are on.

// episodes is a lazily drawn schedule of events (a tachycardia, a
// desaturation, a lead-off, a machine fault): the first starts at a time
// drawn from first, each next one a gap drawn from gap after the previous
// ends, each lasting a time drawn from length, at a level drawn from level.
// Draws happen in episode order, never in query order, so the schedule is
// the same however it is queried. Only episodes near the latest query are
// kept: memory is bounded however long the run.
type episodes struct {
	rng                       *rand.Rand
	first, gap, length, level [2]float64
	list                      []episode
	next                      float64 // start of the next episode to draw
}

type episode struct{ start, end, level float64 }

func newEpisodes(rng *rand.Rand, first, gap, length, level [2]float64) *episodes {
	e := &episodes{rng: rng, first: first, gap: gap, length: length, level: level}
	e.next = e.draw(first)
	return e
}

func (e *episodes) draw(r [2]float64) float64 { return r[0] + e.rng.Float64()*(r[1]-r[0]) }

// keepBehind is how far before the latest query episodes are kept; queries
// go back at most a tick (a batch starts before the vitals of its tick).
const keepBehind = 600.0

// at returns the episode active at t, if any.
func (e *episodes) at(t float64) (episode, bool) {
	for e.next <= t {
		ep := episode{start: e.next, end: e.next + e.draw(e.length), level: e.draw(e.level)}
		e.list = append(e.list, ep)
		e.next = ep.end + e.draw(e.gap)
	}
	drop := 0
	for drop < len(e.list) && e.list[drop].end < t-keepBehind {
		drop++
	}
	if drop > 0 {
		e.list = append(e.list[:0], e.list[drop:]...)
	}
	for _, ep := range e.list {
		if t >= ep.start && t < ep.end {
			return ep, true
		}
	}
	return episode{}, false
}

// overlaps reports whether an episode intersects [t0, t1).
func (e *episodes) overlaps(t0, t1 float64) bool {
	e.at(t1) // draw up to t1
	for _, ep := range e.list {
		if ep.start < t1 && ep.end > t0 {
			return true
		}
	}
	return false
}

// ramp blends base into an episode's level over rampS seconds at both
// ends, so a value crosses a threshold smoothly, as a real one does.
func ramp(base float64, ep episode, ok bool, t, rampS float64) float64 {
	if !ok {
		return base
	}
	w := math.Min(math.Min(t-ep.start, ep.end-t)/rampS, 1)
	return base + w*(ep.level-base)
}

// envModel: temperature and humidity with a daily cycle in event time
// (UTC), warmest at 15:00, and noise.
type envModel struct {
	rng           *rand.Rand
	temp, tempAmp float64
	hum, humAmp   float64
}

func newEnvModel(rng *rand.Rand) *envModel {
	return &envModel{
		rng:     rng,
		temp:    18 + 6*rng.Float64(),
		tempAmp: 3 + 3*rng.Float64(),
		hum:     45 + 15*rng.Float64(),
		humAmp:  8 + 7*rng.Float64(),
	}
}

// at returns temperature (°C) and relative humidity (%) at unix time ns.
func (m *envModel) at(unixNs int64) (temp, hum float64) {
	const day = int64(86400e9)
	hour := float64(((unixNs%day)+day)%day) / 3600e9
	c := math.Cos(2 * math.Pi * (hour - 15) / 24)
	temp = m.temp + m.tempAmp*c + 0.2*m.rng.NormFloat64()
	hum = m.hum - m.humAmp*c + m.rng.NormFloat64()
	return temp, math.Max(0, math.Min(100, hum))
}

// VibrationRateHz is the accelerometer's sample rate.
const VibrationRateHz = 100

// vibModel: a rotating machine seen by a 3-axis accelerometer in g: x and y
// carry the rotation frequency in quadrature, z gravity plus its second
// harmonic; every few minutes a fault quadruples the amplitude for 30-60 s
// (what a vibration-RMS alert rule is for).
type vibModel struct {
	rng       *rand.Rand
	freq, amp float64
	faults    *episodes
}

func newVibModel(rng *rand.Rand, stream func(streamID) *rand.Rand) *vibModel {
	return &vibModel{
		rng:    rng,
		freq:   12 + 18*rng.Float64(),
		amp:    0.2 + 0.2*rng.Float64(),
		faults: newEpisodes(stream(streamMachineFault), [2]float64{60, 240}, [2]float64{120, 420}, [2]float64{30, 60}, [2]float64{3.5, 4.5}),
	}
}

// sample returns x, y, z at t seconds.
func (m *vibModel) sample(t float64) (x, y, z float64) {
	a := m.amp
	if ep, ok := m.faults.at(t); ok {
		a *= ep.level
	}
	w := 2 * math.Pi * m.freq * t
	x = a*math.Sin(w) + 0.02*m.rng.NormFloat64()
	y = a*math.Cos(w) + 0.02*m.rng.NormFloat64()
	z = 1 + 0.2*a*math.Sin(2*w) + 0.02*m.rng.NormFloat64()
	return x, y, z
}

// ECGRateHz is the sample rate of the synthetic ECG.
const ECGRateHz = 250

// vitalsModel: heart rate and SpO2 of a patient.
//
//   - Heart rate: a per-patient baseline (68-82 bpm) with a slow ±4 bpm
//     swing; tachycardia episodes at 146-165 bpm lasting 20-45 s (at least
//     14 s fully above 140 after 3 s ramps), the first within 30-120 s of
//     event time, then every 2-5 min.
//   - SpO2: about 97.5 %; desaturations to 83-88 % lasting 25-50 s (at
//     least 17 s below 90 after 4 s ramps), the first within 60-180 s,
//     then every 2.5-6 min; it recovers to ~97 %, clearing a 92 % rule.
//   - ECG lead-off: 6-10 s without ECG batches, the first within 90-240 s,
//     then every 3.3-6.7 min.
//
// So within 5 minutes of event time every example alert rule (HR outside
// 40-140 for 10 s, SpO2 < 90 for 15 s, ECG missing for 5 s) fires at
// least once, whatever the seed.
type vitalsModel struct {
	noise        *rand.Rand
	hrBase, hrPh float64
	tachy        *episodes
	desat        *episodes
	leadOff      *episodes
}

func newVitalsModel(rng *rand.Rand, stream func(streamID) *rand.Rand) *vitalsModel {
	return &vitalsModel{
		noise:   rng,
		hrBase:  68 + 14*rng.Float64(),
		hrPh:    2 * math.Pi * rng.Float64(),
		tachy:   newEpisodes(stream(streamTachycardia), [2]float64{30, 120}, [2]float64{120, 300}, [2]float64{20, 45}, [2]float64{146, 165}),
		desat:   newEpisodes(stream(streamDesaturation), [2]float64{60, 180}, [2]float64{150, 360}, [2]float64{25, 50}, [2]float64{83, 88}),
		leadOff: newEpisodes(stream(streamLeadOff), [2]float64{90, 240}, [2]float64{200, 400}, [2]float64{6, 10}, [2]float64{0, 0}),
	}
}

// hr returns the noiseless heart rate at t seconds (it paces the synthetic
// ECG too, so a tachycardia shows in the waveform).
func (m *vitalsModel) hr(t float64) float64 {
	base := m.hrBase + 4*math.Sin(2*math.Pi*t/97+m.hrPh)
	ep, ok := m.tachy.at(t)
	return ramp(base, ep, ok, t, 3)
}

// spo2 returns SpO2 (%) at t seconds, with noise.
func (m *vitalsModel) spo2(t float64) float64 {
	ep, ok := m.desat.at(t)
	v := ramp(97.5, ep, ok, t, 4) + 0.4*m.noise.NormFloat64()
	return math.Min(100, v)
}

// ecgWave is one Gaussian component of a beat, relative to its R peak.
type ecgWave struct{ mu, amp, sigma float64 }

// PQRST shape (seconds, mV) for an RR of 0.8 s; P and T positions scale
// with sqrt(RR) (Bazett), so a fast heart keeps a plausible shape.
var pqrst = [...]ecgWave{
	{-0.20, 0.15, 0.025}, // P
	{-0.035, -0.12, 0.010},
	{0, 1.10, 0.011}, // R
	{0.035, -0.22, 0.011},
	{0.28, 0.32, 0.045}, // T
}

// synthECG produces a PQRST-like waveform whose beats follow the heart
// rate of a vitalsModel, with 2 % RR jitter, baseline wander and noise.
type synthECG struct {
	rng          *rand.Rand
	vit          *vitalsModel
	prevR, nextR float64
	prevRR       float64
}

func newSynthECG(rng *rand.Rand, vit *vitalsModel) *synthECG {
	e := &synthECG{rng: rng, vit: vit}
	e.prevRR = 60 / vit.hr(0)
	e.prevR = -rng.Float64() * e.prevRR
	e.nextR = e.prevR + e.prevRR
	return e
}

func beat(dt, rr float64) float64 {
	s := math.Sqrt(rr / 0.8)
	v := 0.0
	for i, w := range pqrst {
		mu := w.mu
		if i == 0 || i == len(pqrst)-1 {
			mu *= s
		}
		d := (dt - mu) / w.sigma
		if d > -6 && d < 6 {
			v += w.amp * math.Exp(-0.5*d*d)
		}
	}
	return v
}

// sample returns the ECG (mV) at t seconds; t must not decrease.
func (e *synthECG) sample(t float64) float64 {
	for t >= e.nextR {
		rr := 60 / e.vit.hr(e.nextR) * (1 + 0.02*e.rng.NormFloat64())
		e.prevR, e.prevRR = e.nextR, e.nextR-e.prevR
		e.nextR += rr
	}
	v := beat(t-e.prevR, e.prevRR) + beat(t-e.nextR, e.nextR-e.prevR)
	return v + 0.04*math.Sin(2*math.Pi*0.25*t) + 0.008*e.rng.NormFloat64()
}
