// Command ttft measures time to first token of a streamed chat completion.
//
// wrk measures whole responses only; this probe sends the same POST on
// keep-alive connections from a fixed number of workers for a fixed time and
// records, per request, the time to the first server-sent event that carries
// content and the time to the end of the stream. It prints one JSON object of
// percentiles in milliseconds. The same probe runs against every target.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

// firstContent reports whether an SSE data line holds a non-empty "content".
func firstContent(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("data:")) {
		return false
	}
	at := bytes.Index(line, []byte(`"content"`))
	if at < 0 {
		return false
	}
	rest := bytes.TrimLeft(line[at+len(`"content"`):], " :")
	return len(rest) > 1 && rest[0] == '"' && rest[1] != '"'
}

type sample struct{ first, total time.Duration }

func one(client *http.Client, url, auth string, body []byte) (sample, bool) {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return sample{}, false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := client.Do(req)
	if err != nil {
		return sample{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return sample{}, false
	}
	var first time.Duration
	reader := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := reader.ReadSlice('\n')
		if first == 0 && firstContent(line) {
			first = time.Since(start)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			break
		}
	}
	return sample{first, time.Since(start)}, first > 0
}

func pct(values []time.Duration, q float64) float64 {
	if len(values) == 0 {
		return -1
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	i := int(q * float64(len(values)))
	if i >= len(values) {
		i = len(values) - 1
	}
	return float64(values[i].Microseconds()) / 1000.0
}

func main() {
	url := flag.String("url", "", "chat completions URL")
	key := flag.String("key", "", "bearer key")
	bodyFile := flag.String("body", "", "file holding the JSON request body (stream: true)")
	workers := flag.Int("c", 1, "concurrent connections")
	duration := flag.Duration("d", 3*time.Second, "measured time")
	timeout := flag.Duration("timeout", 60*time.Second, "timeout of one request")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        *workers,
		MaxIdleConnsPerHost: *workers,
		MaxConnsPerHost:     *workers,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}
	auth := "Bearer " + *key
	var mu sync.Mutex
	var firsts, totals []time.Duration
	errors := 0
	stop := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				s, ok := one(client, *url, auth, body)
				mu.Lock()
				if ok {
					firsts, totals = append(firsts, s.first), append(totals, s.total)
				} else {
					errors++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out, _ := json.Marshal(map[string]any{
		"requests": len(firsts), "errors": errors,
		"ttft_p50": pct(firsts, 0.5), "ttft_p90": pct(firsts, 0.9), "ttft_p99": pct(firsts, 0.99),
		"total_p50": pct(totals, 0.5), "total_p99": pct(totals, 0.99),
	})
	_, _ = os.Stdout.Write(append(out, '\n'))
}
