package firmwaresim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
)

// The first 5 minutes of MIT-BIH Arrhythmia Database record 100 (see
// data/README.md for the source and its attribution).
var (
	//go:embed data/mitdb-100-ecg-5min.csv.gz
	mitdbECGGz []byte
	//go:embed data/mitdb-100-annotations-5min.csv.gz
	mitdbAnnGz []byte
)

// MITDBRateHz is the sample rate of record 100.
const MITDBRateHz = 360

// Bounds of the CSV readers: the embedded data is far below them; they
// keep a hostile input (fuzzing) from growing memory without limit.
const (
	maxCSVRows    = 1 << 20
	maxCSVLineLen = 256
)

// mitdb is the decoded record: lead MLII in mV and the heart rate after
// each beat.
type mitdb struct {
	mlii  []float32
	beats []int64   // sample index of each beat annotation
	hr    []float64 // hr[j]: bpm from the (up to) 4 RR intervals ending at beats[j]
}

var (
	mitdbOnce sync.Once
	mitdbData *mitdb
	mitdbErr  error
)

// loadMITDB decodes the embedded record once. It costs about 20 ms and
// 0.5 MiB, paid only by runs that replay it.
func loadMITDB() (*mitdb, error) {
	mitdbOnce.Do(func() {
		mitdbData, mitdbErr = decodeMITDB(mitdbECGGz, mitdbAnnGz)
		if mitdbErr != nil {
			mitdbErr = fmt.Errorf("BUG: embedded MIT-BIH data: %w", mitdbErr)
		}
	})
	return mitdbData, mitdbErr
}

func decodeMITDB(ecgGz, annGz []byte) (*mitdb, error) {
	zr, err := gzip.NewReader(bytes.NewReader(ecgGz))
	if err != nil {
		return nil, fmt.Errorf("ECG: %w", err)
	}
	mlii, err := ParseECGCSV(zr)
	if err != nil {
		return nil, fmt.Errorf("ECG: %w", err)
	}
	zr, err = gzip.NewReader(bytes.NewReader(annGz))
	if err != nil {
		return nil, fmt.Errorf("annotations: %w", err)
	}
	beats, err := ParseBeatAnnotations(zr)
	if err != nil {
		return nil, fmt.Errorf("annotations: %w", err)
	}
	if len(mlii) == 0 || len(beats) < 5 {
		return nil, fmt.Errorf("%d samples and %d beats: too few to replay", len(mlii), len(beats))
	}
	hr := make([]float64, len(beats))
	for j := 4; j < len(beats); j++ {
		span := beats[j] - beats[j-4]
		if span <= 0 {
			return nil, fmt.Errorf("beats %d to %d span %d samples", j-4, j, span)
		}
		hr[j] = 60 * MITDBRateHz * 4 / float64(span)
	}
	for j := 0; j < 4; j++ {
		hr[j] = hr[4] // the first beats take the rate of the first four intervals
	}
	return &mitdb{mlii: mlii, beats: beats, hr: hr}, nil
}

// hrAt returns the heart rate at sample n of the looped record.
func (m *mitdb) hrAt(n int64) float64 {
	p := n % int64(len(m.mlii))
	j := sort.Search(len(m.beats), func(i int) bool { return m.beats[i] > p }) - 1
	if j < 0 {
		j = len(m.beats) - 1 // before the first beat: the loop's last rate
	}
	return m.hr[j]
}

// CSVError is a problem in a CSV input, with its 1-based line and column.
type CSVError struct {
	Line, Column int
	Msg          string
}

func (e *CSVError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// csvLines calls fn with the fields of each line after the header, which
// must equal header.
func csvLines(r io.Reader, header string, fn func(line int, fields [][]byte, cols []int) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxCSVLineLen), maxCSVLineLen)
	line := 0
	var fields [][]byte
	var cols []int
	for sc.Scan() {
		line++
		b := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if line == 1 {
			if string(b) != header {
				return &CSVError{Line: 1, Column: 1, Msg: fmt.Sprintf("header %q, want %q", b, header)}
			}
			continue
		}
		if line > maxCSVRows+1 {
			return &CSVError{Line: line, Column: 1, Msg: fmt.Sprintf("more than %d rows", maxCSVRows)}
		}
		fields, cols = fields[:0], cols[:0]
		start := 0
		for i := 0; i <= len(b); i++ {
			if i == len(b) || b[i] == ',' {
				fields = append(fields, b[start:i])
				cols = append(cols, start+1)
				start = i + 1
			}
		}
		if err := fn(line, fields, cols); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return &CSVError{Line: line + 1, Column: 1, Msg: err.Error()}
	}
	if line == 0 {
		return &CSVError{Line: 1, Column: 1, Msg: "empty input, want header " + strconv.Quote(header)}
	}
	return nil
}

func csvFloat(line int, f []byte, col int, name string) (float64, error) {
	v, err := strconv.ParseFloat(string(f), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, &CSVError{Line: line, Column: col, Msg: fmt.Sprintf("%s %q is not a finite number", name, f)}
	}
	return v, nil
}

// ParseECGCSV reads the MIT-BIH CSV export `t_s,mlii_mv,v5_mv` and
// returns lead MLII in millivolts. Rows must have three finite numbers
// with t_s increasing; any other input is a *CSVError with its line and
// column.
func ParseECGCSV(r io.Reader) ([]float32, error) {
	var out []float32
	last := math.Inf(-1)
	err := csvLines(r, "t_s,mlii_mv,v5_mv", func(line int, f [][]byte, cols []int) error {
		if len(f) != 3 {
			return &CSVError{Line: line, Column: 1, Msg: fmt.Sprintf("%d fields, want 3", len(f))}
		}
		t, err := csvFloat(line, f[0], cols[0], "t_s")
		if err != nil {
			return err
		}
		if t <= last {
			return &CSVError{Line: line, Column: cols[0], Msg: fmt.Sprintf("t_s %v does not increase", t)}
		}
		last = t
		v, err := csvFloat(line, f[1], cols[1], "mlii_mv")
		if err != nil {
			return err
		}
		if _, err := csvFloat(line, f[2], cols[2], "v5_mv"); err != nil {
			return err
		}
		out = append(out, float32(v))
		return nil
	})
	return out, err
}

// beatSymbols are the MIT annotation codes of beats (the others mark
// rhythm changes, noise and so on).
const beatSymbols = "NLRBAaJSVrFejnE/fQ?"

// ParseBeatAnnotations reads `sample,t_s,symbol` rows and returns the
// sample indexes of the beats, in order. sample must be a non-negative
// integer that does not decrease; symbol must be non-empty.
func ParseBeatAnnotations(r io.Reader) ([]int64, error) {
	var out []int64
	last := int64(-1)
	err := csvLines(r, "sample,t_s,symbol", func(line int, f [][]byte, cols []int) error {
		if len(f) != 3 {
			return &CSVError{Line: line, Column: 1, Msg: fmt.Sprintf("%d fields, want 3", len(f))}
		}
		s, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || s < 0 {
			return &CSVError{Line: line, Column: cols[0], Msg: fmt.Sprintf("sample %q is not a non-negative integer", f[0])}
		}
		if s < last {
			return &CSVError{Line: line, Column: cols[0], Msg: fmt.Sprintf("sample %d goes back (previous %d)", s, last)}
		}
		last = s
		if _, err := csvFloat(line, f[1], cols[1], "t_s"); err != nil {
			return err
		}
		if len(f[2]) == 0 {
			return &CSVError{Line: line, Column: cols[2], Msg: "empty symbol"}
		}
		if len(f[2]) == 1 && bytes.IndexByte([]byte(beatSymbols), f[2][0]) >= 0 {
			out = append(out, s)
		}
		return nil
	})
	return out, err
}
