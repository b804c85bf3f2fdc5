"""Attribute names: the OpenTelemetry GenAI and HTTP semantic conventions, and the runtime's own.

Plain strings rather than the ``opentelemetry-semantic-conventions`` constants: the GenAI names
are still marked incubating there and move between modules from one release to the next.
"""

from __future__ import annotations

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
# The name used before gen_ai.provider.name (semantic conventions < 1.37); backends still read it.
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# Content, only with captureContent (JSON text, the conventions' message shape).
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"

ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"

# The runtime's own (no convention covers a failover chain).
PROVIDER_ID = "sentient.provider.id"
ATTEMPT = "sentient.attempt"
CHAIN_POSITION = "sentient.chain.position"
STREAMED = "sentient.streamed"
REQUEST_ID = "sentient.request_id"
FAILOVER_EVENT = "sentient.failover"
SKIPPED_EVENT = "sentient.provider_skipped"
FAILOVER_FROM = "sentient.failover.from"
FAILOVER_TO = "sentient.failover.to"
FAILOVER_PHASE = "sentient.failover.phase"

OPERATION_CHAT = "chat"
# gen_ai.provider.name per provider type: the conventions' well-known values where one applies.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "openai-compatible": "openai-compatible"}
