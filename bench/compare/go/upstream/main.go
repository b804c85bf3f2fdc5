// Command upstream is the fast fake OpenAI upstream of the side-by-side bench.
//
// It serves POST /v1/chat/completions non-streamed and streamed (server-sent
// events, a fixed number of content chunks, each flushed on its own). A request
// whose body contains the marker "[paced]" is streamed with a pause between
// chunks, so that a gateway cannot merge chunks that arrive in one read. Every
// response body is prepared at start, so that serving one costs little more
// than parsing the request: the upstream must never be the bottleneck.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// pacedMarker in a request body asks for paced chunks; gateways forward the
// messages unchanged, so the marker reaches the upstream through every one.
var pacedMarker = []byte("[paced]")

type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type server struct {
	mu       sync.RWMutex // guards complete and stream: handlers run concurrently
	auth     string
	chunks   int
	pace     time.Duration
	complete map[string][]byte   // by model
	stream   map[string][][]byte // by model: content chunks, finish, usage
}

const created = 1700000000

func (s *server) bodies(model string) ([]byte, [][]byte) {
	s.mu.RLock()
	body, ok := s.complete[model]
	events := s.stream[model]
	s.mu.RUnlock()
	if ok {
		return body, events
	}
	// Few distinct models are ever asked for; build and keep them.
	content := ""
	for i := 0; i < s.chunks; i++ {
		content += fmt.Sprintf(" word%d", i)
	}
	usage := map[string]int{"prompt_tokens": 12, "completion_tokens": s.chunks, "total_tokens": 12 + s.chunks}
	complete, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-bench", "object": "chat.completion", "created": created, "model": model,
		"choices": []any{map[string]any{
			"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": content},
		}},
		"usage": usage,
	})
	chunk := func(delta map[string]any, finish any, usage any) []byte {
		event := map[string]any{
			"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
		if usage != nil {
			event["choices"] = []any{}
			event["usage"] = usage
		}
		data, _ := json.Marshal(event)
		return append(append([]byte("data: "), data...), '\n', '\n')
	}
	events = nil
	for i := 0; i < s.chunks; i++ {
		delta := map[string]any{"content": fmt.Sprintf(" word%d", i)}
		if i == 0 {
			delta["role"] = "assistant"
		}
		events = append(events, chunk(delta, nil, nil))
	}
	events = append(events, chunk(map[string]any{}, "stop", nil), chunk(nil, nil, usage))
	s.mu.Lock()
	s.complete[model], s.stream[model] = complete, events
	s.mu.Unlock()
	return complete, events
}

func (s *server) chat(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if s.auth != "" && r.Header.Get("Authorization") != s.auth {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"invalid api key","type":"invalid_request_error"}}`))
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var req request
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err != nil {
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	if req.Model == "" {
		req.Model = "fake-model"
	}
	complete, events := s.bodies(req.Model)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(complete)))
		_, _ = w.Write(complete)
		return
	}
	paced := s.pace > 0 && bytes.Contains(raw, pacedMarker)
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	last := len(events) - 1 // the usage event, sent only when asked for
	for i, event := range events {
		if i == last && (req.StreamOptions == nil || !req.StreamOptions.IncludeUsage) {
			continue
		}
		if paced && i > 0 && i < s.chunks {
			time.Sleep(s.pace)
		}
		if _, err := w.Write(event); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen address (loopback)")
	apiKey := flag.String("api-key", "", "expected bearer key (empty: any)")
	chunks := flag.Int("chunks", 20, "content chunks per streamed answer (and words per answer)")
	pace := flag.Duration("pace", time.Millisecond, "pause between chunks of a paced stream")
	flag.Parse()
	s := &server{chunks: *chunks, pace: *pace, complete: map[string][]byte{}, stream: map[string][][]byte{}}
	if *apiKey != "" {
		s.auth = "Bearer " + *apiKey
	}
	s.bodies("fake-model")
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/chat/completions", s.chat)
	mux.HandleFunc("/chat/completions", s.chat)
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"fake-model","object":"model","owned_by":"bench"}]}`))
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
