package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
	"unicode/utf8"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/queue"
)

// chatJob is the payload of a job on the chat queue.
type chatJob struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Agent     string    `json:"agent"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

// embeddingJob and webhookJob are the follow-ups of a finished chat.
type embeddingJob struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

type webhookJob struct {
	ID     string         `json:"id"`
	User   string         `json:"user"`
	Status chatapi.Status `json:"status"`
}

var errUnknownAgent = errors.New("unknown agent")

// errModel is the simulated model's failure (Config.FailRate).
var errModel = errors.New("simulated model error")

// handleChat runs one chat job: it calls the (simulated) model, stores the
// reply and enqueues the follow-ups. An error retries the job; after its last
// attempt the chat is stored as failed so the client stops waiting.
//
// Delivery is at least once, so everything here may run twice for one chat:
// the reply is overwritten with an equal one, and the follow-ups' handlers
// must tolerate a duplicate.
func (s *service) handleChat(ctx context.Context, job *queue.Job) error {
	running := s.chatRunning.Add(1)
	defer s.chatRunning.Add(-1)
	s.observeChatWait(job, running)
	var j chatJob
	if err := json.Unmarshal(job.Payload, &j); err != nil {
		return queue.Permanent(fmt.Errorf("decoding chat job: %w", err))
	}
	agent, err := s.agent(ctx, j.Agent)
	if errors.Is(err, errUnknownAgent) { // removed since the request was accepted
		s.storeFailed(ctx, &j, job, err)
		return queue.Permanent(err)
	}
	if err != nil {
		return err
	}
	text, err := s.model(ctx, agent, j.Message)
	if err != nil {
		if job.Attempt >= job.MaxAttempts {
			s.storeFailed(ctx, &j, job, err)
		}
		return err
	}
	reply := chatapi.Reply{
		ID: j.ID, Status: chatapi.StatusDone, User: j.User, Agent: j.Agent, Model: agent.Model,
		Reply: text, Attempts: job.Attempt, CreatedAt: j.CreatedAt, DoneAt: time.Now(),
	}
	if err := s.replies.Set(ctx, j.ID, reply, s.cfg.ReplyTTL); err != nil {
		return fmt.Errorf("storing the reply: %w", err)
	}
	emb, _ := json.Marshal(embeddingJob{ID: j.ID, Text: text})
	if _, err := s.queues[chatapi.QueueEmbeddings].Enqueue(ctx, emb); err != nil {
		return fmt.Errorf("enqueueing the embedding: %w", err)
	}
	hook, _ := json.Marshal(webhookJob{ID: j.ID, User: j.User, Status: chatapi.StatusDone})
	if _, err := s.queues[chatapi.QueueWebhooks].Enqueue(ctx, hook); err != nil {
		return fmt.Errorf("enqueueing the webhook: %w", err)
	}
	return nil
}

// storeFailed records that a chat will not be answered. If that fails too the
// chat stays pending until its TTL; the job's dead letter still says why.
func (s *service) storeFailed(ctx context.Context, j *chatJob, job *queue.Job, cause error) {
	reply := chatapi.Reply{
		ID: j.ID, Status: chatapi.StatusFailed, User: j.User, Agent: j.Agent,
		Error: cause.Error(), Attempts: job.Attempt, CreatedAt: j.CreatedAt, DoneAt: time.Now(),
	}
	if err := s.replies.Set(ctx, j.ID, reply, s.cfg.ReplyTTL); err != nil {
		s.log.Warn("storing a failed chat", "id", j.ID, "err", err)
	}
}

// model simulates a model call: Config.Latency on average (half to one and a
// half times it), failing with probability Config.FailRate. It returns early
// when ctx ends (the job's timeout, or the drain giving up on it).
func (s *service) model(ctx context.Context, agent chatapi.Agent, message string) (string, error) {
	d := time.Duration(float64(s.cfg.Latency) * (0.5 + rand.Float64()))
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return "", ctx.Err()
	}
	if rand.Float64() < s.cfg.FailRate {
		return "", errModel
	}
	if n := 200; len(message) > n {
		for n > 0 && !utf8.RuneStart(message[n]) {
			n--
		}
		message = message[:n] + "..."
	}
	return fmt.Sprintf("%s here (%s, max %d tokens). You said: %s", agent.Name, agent.Model, agent.MaxTokens, message), nil
}

// handleEmbedding stands in for computing and storing an embedding of the
// reply. The queue counts what it processed (WorkerStats.Processed).
func (s *service) handleEmbedding(_ context.Context, job *queue.Job) error {
	var j embeddingJob
	if err := json.Unmarshal(job.Payload, &j); err != nil {
		return queue.Permanent(fmt.Errorf("decoding embedding job: %w", err))
	}
	if j.ID == "" || j.Text == "" {
		return queue.Permanent(fmt.Errorf("embedding job %s: missing id or text", job.ID))
	}
	return nil
}

// handleWebhook stands in for notifying the user's webhook.
func (s *service) handleWebhook(_ context.Context, job *queue.Job) error {
	var j webhookJob
	if err := json.Unmarshal(job.Payload, &j); err != nil {
		return queue.Permanent(fmt.Errorf("decoding webhook job: %w", err))
	}
	if j.ID == "" || j.Status == "" {
		return queue.Permanent(fmt.Errorf("webhook job %s: missing id or status", job.ID))
	}
	return nil
}

// builtinAgents is what the simulated agent store holds.
func builtinAgents() []chatapi.Agent {
	return []chatapi.Agent{
		{Name: "assistant", Model: "sim-large", SystemPrompt: "You are a helpful assistant.", MaxTokens: 1024},
		{Name: "coder", Model: "sim-code", SystemPrompt: "You write Go.", MaxTokens: 2048},
		{Name: "translator", Model: "sim-small", SystemPrompt: "You translate.", MaxTokens: 512},
	}
}

// agentList returns the agent configs through the agents cache: the local
// tier, else Redis, else one call of the slow loader across all instances.
// The slice is shared with other callers: read it, never modify it.
func (s *service) agentList(ctx context.Context) ([]chatapi.Agent, error) {
	return s.agents.GetOrLoad(ctx, agentsKey, func(ctx context.Context) ([]chatapi.Agent, error) {
		s.log.Info("loading agents from the (simulated) store", "latency", s.cfg.AgentsLatency)
		t := time.NewTimer(s.cfg.AgentsLatency)
		defer t.Stop()
		select {
		case <-t.C:
			return builtinAgents(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// agent returns the named agent's config, or an error wrapping
// errUnknownAgent.
func (s *service) agent(ctx context.Context, name string) (chatapi.Agent, error) {
	agents, err := s.agentList(ctx)
	if err != nil {
		return chatapi.Agent{}, err
	}
	for _, a := range agents {
		if a.Name == name {
			return a, nil
		}
	}
	return chatapi.Agent{}, fmt.Errorf("%w %q (GET %s lists them)", errUnknownAgent, name, chatapi.PathAgents)
}
