"""LiteLLM's provider prefixes (`anthropic/…`, `groq/…`) as ccm provider types, default URLs and key variables.

LiteLLM picks a provider from the prefix of `litellm_params.model` (or `custom_llm_provider`), with a default API
base and the environment variable it reads the key from when the config names none. ccm speaks Anthropic, Gemini
and OpenAI-compatible APIs; every prefix below is one of those. Prefixes for APIs ccm has no adapter for (Azure's
deployments API, Bedrock, Vertex, SageMaker…) are reported and their deployments skipped.
"""

from __future__ import annotations

from ccm.frozen import frozen


@frozen
class Prefix:
    type: str
    url: str | None  # None: the config must give api_base
    key_env: str | None  # what LiteLLM reads when the config gives no api_key


PREFIXES: dict[str, Prefix] = {
    "anthropic": Prefix("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "openai": Prefix("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "gemini": Prefix("gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY"),
    "deepseek": Prefix("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "openrouter": Prefix("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": Prefix("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": Prefix("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "together_ai": Prefix("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "fireworks_ai": Prefix("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "xai": Prefix("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": Prefix("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "cerebras": Prefix("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "deepinfra": Prefix("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "moonshot": Prefix("openai", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
    "nvidia_nim": Prefix("openai", "https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_KEY"),
    "dashscope": Prefix("openai", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY"),
    "ollama": Prefix("openai", "http://localhost:11434", None),
    "ollama_chat": Prefix("openai", "http://localhost:11434", None),
    "lm_studio": Prefix("openai", "http://localhost:1234/v1", None),
    "hosted_vllm": Prefix("openai", None, None),
    "vllm": Prefix("openai", None, None),
    "openai_like": Prefix("openai", None, None),
    "litellm_proxy": Prefix("openai", None, "LITELLM_PROXY_API_KEY"),
}

# Prefixes LiteLLM knows that need an adapter ccm does not have.
NO_ADAPTER = {"azure", "azure_ai", "azure_text", "bedrock", "bedrock_converse", "vertex_ai", "vertex_ai_beta",
              "sagemaker", "sagemaker_chat", "huggingface", "cohere", "cohere_chat", "replicate", "watsonx",
              "databricks", "cloudflare", "ai21", "nlp_cloud", "aleph_alpha", "petals", "palm", "predibase",
              "clarifai", "triton", "text-completion-openai", "text-completion-codestral", "codestral", "voyage"}


def split_model(model: str, custom_provider: str | None) -> tuple[str | None, str]:
    """(prefix, model id) as LiteLLM reads `litellm_params.model`; prefix None when it cannot tell."""
    if custom_provider:
        prefix = custom_provider.lower()
        rest = model.removeprefix(f"{custom_provider}/")
        return prefix, rest
    head, slash, rest = model.partition("/")
    if slash and (head in PREFIXES or head in NO_ADAPTER):
        return head, rest
    # LiteLLM knows bare OpenAI and Anthropic model names.
    if model.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai", model
    if model.startswith("claude-"):
        return "anthropic", model
    return None, model


def openai_compatible_url(prefix: str, url: str) -> str:
    """LiteLLM's `ollama/` talks to Ollama's own /api; ccm uses its OpenAI-compatible endpoint under /v1."""
    if prefix in ("ollama", "ollama_chat") and not url.rstrip("/").endswith("/v1"):
        return url.rstrip("/") + "/v1"
    return url.rstrip("/")
