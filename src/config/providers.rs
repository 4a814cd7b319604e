//! Providers as rows of data: the OpenAI-compatible APIs differ only in their default base
//! URL, how paths are formed and which header carries the key. Providers the gateway cannot
//! call (request signing, another wire protocol) are rows too, with the reason.

/// How request paths are formed under a deployment's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// `<base without /v1>/v1/<endpoint>`: OpenAI and the servers that copy it.
    OpenAi,
    /// `<base>/<endpoint>` exactly (the base already holds any version segment).
    Exact,
    /// Azure OpenAI: `<resource>/openai/deployments/<deployment>/<endpoint>?api-version=V`.
    Azure,
    /// Azure AI Foundry (LiteLLM's `azure_ai/`): `<base>/models/<endpoint>` on a
    /// `*.services.ai.azure.com` host, else `<base>/<endpoint>`; `?api-version=` only when
    /// one is configured.
    AzureAi,
}

/// Which header carries the upstream key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// Azure's `api-key: <key>`.
    ApiKey,
    /// `api-key` on Azure's own hosts (`*.services.ai.azure.com`, `*.openai.azure.com`),
    /// Bearer elsewhere: LiteLLM's rule for `azure_ai/`.
    ApiKeyOnAzureHosts,
}

impl KeyHeader {
    /// The header name for a deployment on `host`.
    pub fn name_for(self, host: &str) -> &'static str {
        let azure_host =
            host.ends_with(".services.ai.azure.com") || host.ends_with(".openai.azure.com");
        match self {
            KeyHeader::ApiKey => "api-key",
            KeyHeader::ApiKeyOnAzureHosts if azure_host => "api-key",
            _ => "authorization",
        }
    }
}

/// The OpenAI chat-completions parameters LiteLLM checks against a provider's supported
/// list: one of these a provider does not take is refused (400), or dropped with
/// `drop_params`. Anything else in a request is the provider's own and passes on.
pub const OPENAI_CHAT_PARAMS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "seed",
    "service_tier",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "web_search_options",
];

/// One OpenAI-compatible provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub prefix: &'static str,
    /// Where requests go when `api_base` is not given (`None`: `api_base` is required).
    pub default_base: Option<&'static str>,
    pub paths: PathStyle,
    /// The header the upstream key goes in.
    pub key_header: KeyHeader,
    /// The OpenAI chat parameters the provider takes, as LiteLLM lists them
    /// (`get_supported_openai_params`); `None`: all of them. Parameters LiteLLM allows only
    /// for some of a provider's models are listed (the provider judges those).
    pub supports: Option<&'static [&'static str]>,
    /// The provider takes `max_tokens` only: a `max_completion_tokens` is sent as that.
    pub max_tokens_only: bool,
    /// A namespace the provider's model names live in (`accounts/fireworks/models/`),
    /// prepended unless the configured name already starts with its first segment.
    pub model_namespace: Option<&'static str>,
    /// A vLLM server: `/vllm/*` pass-through and its `/health` probe.
    pub is_vllm: bool,
    /// A text-completion model: chat requests go to its completions endpoint as a prompt.
    pub text_completion: bool,
}

const fn row(prefix: &'static str, default_base: Option<&'static str>, paths: PathStyle) -> Row {
    Row {
        prefix,
        default_base,
        paths,
        key_header: KeyHeader::Bearer,
        supports: None,
        max_tokens_only: false,
        model_namespace: None,
        is_vllm: false,
        text_completion: false,
    }
}

/// LiteLLM's prefixes for OpenAI-compatible APIs, with LiteLLM's default bases.
pub const OPENAI_COMPATIBLE: &[Row] = &[
    Row {
        is_vllm: true,
        ..row("hosted_vllm", None, PathStyle::OpenAi)
    },
    Row {
        is_vllm: true,
        ..row("vllm", None, PathStyle::OpenAi)
    },
    row(
        "openai",
        Some("https://api.openai.com/v1"),
        PathStyle::OpenAi,
    ),
    Row {
        text_completion: true,
        ..row(
            "text-completion-openai",
            Some("https://api.openai.com/v1"),
            PathStyle::OpenAi,
        )
    },
    Row {
        key_header: KeyHeader::ApiKey,
        ..row("azure", None, PathStyle::Azure)
    },
    Row {
        key_header: KeyHeader::ApiKeyOnAzureHosts,
        ..row("azure_ai", None, PathStyle::AzureAi)
    },
    row(
        "groq",
        Some("https://api.groq.com/openai/v1"),
        PathStyle::OpenAi,
    ),
    Row {
        supports: Some(&[
            "max_completion_tokens",
            "max_tokens",
            "parallel_tool_calls",
            "reasoning_effort",
            "response_format",
            "seed",
            "stop",
            "stream",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
        ]),
        max_tokens_only: true,
        ..row(
            "mistral",
            Some("https://api.mistral.ai/v1"),
            PathStyle::OpenAi,
        )
    },
    Row {
        supports: Some(&[
            "frequency_penalty",
            "logprobs",
            "max_completion_tokens",
            "max_tokens",
            "n",
            "presence_penalty",
            "response_format",
            "stop",
            "stream",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
            "user",
        ]),
        max_tokens_only: true,
        model_namespace: Some("accounts/fireworks/models/"),
        ..row(
            "fireworks_ai",
            Some("https://api.fireworks.ai/inference/v1"),
            PathStyle::OpenAi,
        )
    },
    row(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "deepseek",
        Some("https://api.deepseek.com/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        PathStyle::OpenAi,
    ),
    Row {
        supports: Some(&[
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "max_completion_tokens",
            "max_tokens",
            "n",
            "parallel_tool_calls",
            "presence_penalty",
            "reasoning_effort",
            "response_format",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "temperature",
            "tool_choice",
            "tools",
            "top_logprobs",
            "top_p",
            "user",
            "web_search_options",
        ]),
        max_tokens_only: true,
        ..row("xai", Some("https://api.x.ai/v1"), PathStyle::OpenAi)
    },
    Row {
        supports: Some(&[
            "frequency_penalty",
            "max_completion_tokens",
            "max_tokens",
            "presence_penalty",
            "reasoning_effort",
            "response_format",
            "stream",
            "temperature",
            "top_p",
        ]),
        ..row(
            "perplexity",
            Some("https://api.perplexity.ai"),
            PathStyle::Exact,
        )
    },
    row("ollama", Some("http://localhost:11434"), PathStyle::OpenAi),
    row(
        "ollama_chat",
        Some("http://localhost:11434"),
        PathStyle::OpenAi,
    ),
    row(
        "lm_studio",
        Some("http://localhost:1234/v1"),
        PathStyle::OpenAi,
    ),
    row("huggingface", None, PathStyle::OpenAi),
    Row {
        // LiteLLM's list for most NIM models (a few older ones take fewer).
        supports: Some(&[
            "frequency_penalty",
            "max_completion_tokens",
            "max_tokens",
            "parallel_tool_calls",
            "presence_penalty",
            "response_format",
            "seed",
            "stop",
            "stream",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
        ]),
        max_tokens_only: true,
        ..row(
            "nvidia_nim",
            Some("https://integrate.api.nvidia.com/v1"),
            PathStyle::OpenAi,
        )
    },
    row(
        "deepinfra",
        Some("https://api.deepinfra.com/v1/openai"),
        PathStyle::Exact,
    ),
    Row {
        supports: Some(&[
            "max_completion_tokens",
            "max_tokens",
            "reasoning_effort",
            "response_format",
            "seed",
            "stop",
            "stream",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
            "user",
        ]),
        max_tokens_only: true,
        ..row(
            "cerebras",
            Some("https://api.cerebras.ai/v1"),
            PathStyle::OpenAi,
        )
    },
    Row {
        supports: Some(&[
            "max_completion_tokens",
            "max_tokens",
            "parallel_tool_calls",
            "response_format",
            "stop",
            "stream",
            "stream_options",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
        ]),
        max_tokens_only: true,
        ..row(
            "sambanova",
            Some("https://api.sambanova.ai/v1"),
            PathStyle::OpenAi,
        )
    },
    row("openai_like", None, PathStyle::OpenAi),
    row("custom_openai", None, PathStyle::OpenAi),
    row("litellm_proxy", None, PathStyle::OpenAi),
];

/// LiteLLM's default Azure OpenAI API version, used when a deployment gives none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2025-02-01-preview";

/// Providers the gateway cannot call, and why.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    ("bedrock", "it needs AWS request signing (SigV4)"),
    ("sagemaker", "it needs AWS request signing (SigV4)"),
    ("sagemaker_chat", "it needs AWS request signing (SigV4)"),
    (
        "vertex_ai",
        "it needs Google OAuth tokens and Vertex AI's own API",
    ),
    (
        "vertex_ai_beta",
        "it needs Google OAuth tokens and Vertex AI's own API",
    ),
    (
        "gemini",
        "it speaks Gemini's own API (generateContent), not OpenAI's",
    ),
    (
        "anthropic",
        "it speaks Anthropic's Messages API, not OpenAI's",
    ),
    ("cohere", "it speaks Cohere's own API, not OpenAI's"),
    ("cohere_chat", "it speaks Cohere's own API, not OpenAI's"),
    (
        "replicate",
        "it speaks Replicate's asynchronous predictions API",
    ),
    ("palm", "it speaks Google's PaLM API"),
    ("ai21", "it speaks AI21's own API"),
    ("watsonx", "it needs IBM IAM tokens and watsonx's own API"),
    ("cloudflare", "it speaks Cloudflare Workers AI's own API"),
    ("databricks", "it needs Databricks OAuth"),
    ("predibase", "it speaks Predibase's own API"),
    ("clarifai", "it speaks Clarifai's own API"),
];

/// The row for a prefix.
pub fn find(prefix: &str) -> Option<&'static Row> {
    OPENAI_COMPATIBLE.iter().find(|r| r.prefix == prefix)
}

/// Why a provider cannot be called, if it is one we know.
pub fn unsupported(prefix: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|&(_, why)| why)
}

impl Row {
    /// The OpenAI chat parameters this provider does not take (empty: it takes all).
    pub fn refused_params(&self) -> Vec<&'static str> {
        match self.supports {
            None => Vec::new(),
            Some(supported) => OPENAI_CHAT_PARAMS
                .iter()
                .copied()
                .filter(|p| !supported.contains(p))
                .collect(),
        }
    }

    /// The model name sent upstream for a configured `name`.
    pub fn upstream_model(&self, name: &str) -> String {
        match self.model_namespace {
            Some(ns) => {
                let first = ns.split('/').next().unwrap_or(ns);
                let already = name.split_once('/').is_some_and(|(head, _)| head == first);
                if already {
                    name.to_string()
                } else {
                    format!("{ns}{name}")
                }
            }
            None => name.to_string(),
        }
    }
}

/// A model name without a prefix that LiteLLM takes for OpenAI's (its model list names
/// them; these are the families it holds).
pub fn is_bare_openai_model(model: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "gpt-",
        "chatgpt-",
        "o1",
        "o3",
        "o4",
        "text-embedding-",
        "text-moderation-",
        "omni-moderation-",
        "davinci-",
        "babbage-",
        "ft:gpt-",
        "ft:davinci-",
        "ft:babbage-",
    ];
    PREFIXES.iter().any(|p| model.starts_with(p))
}

/// The upstream paths of an OpenAI-compatible deployment: chat, completions, embeddings,
/// the native base (for `/vllm/*`), and the health probe.
pub struct Paths {
    pub chat: String,
    pub completions: String,
    pub embeddings: String,
    pub native_base: String,
    pub health: String,
}

/// The paths for `style` under `base_path` on `host`; `api_version` is Azure's (for
/// `AzureAi`, `None` sends none).
pub fn paths(
    style: PathStyle,
    host: &str,
    base_path: &str,
    deployment: &str,
    api_version: Option<&str>,
) -> Paths {
    let base = base_path.trim_end_matches('/');
    match style {
        PathStyle::OpenAi => {
            let base = base.strip_suffix("/v1").unwrap_or(base);
            Paths {
                chat: format!("{base}/v1/chat/completions"),
                completions: format!("{base}/v1/completions"),
                embeddings: format!("{base}/v1/embeddings"),
                native_base: base.to_string(),
                health: format!("{base}/v1/models"),
            }
        }
        PathStyle::Exact => Paths {
            chat: format!("{base}/chat/completions"),
            completions: format!("{base}/completions"),
            embeddings: format!("{base}/embeddings"),
            native_base: base.to_string(),
            health: format!("{base}/models"),
        },
        PathStyle::AzureAi => {
            // LiteLLM adds `/models` on Foundry's own hosts, unless the base has it.
            let base = if host.ends_with(".services.ai.azure.com") && !base.ends_with("/models") {
                format!("{base}/models")
            } else {
                base.to_string()
            };
            let query = api_version
                .map(|v| format!("?api-version={}", percent_encode_query(v)))
                .unwrap_or_default();
            Paths {
                chat: format!("{base}/chat/completions{query}"),
                completions: format!("{base}/completions{query}"),
                embeddings: format!("{base}/embeddings{query}"),
                native_base: base.clone(),
                health: format!("{base}/models{query}"),
            }
        }
        PathStyle::Azure => {
            let version = percent_encode_query(api_version.unwrap_or(AZURE_DEFAULT_API_VERSION));
            let stem = format!(
                "{base}/openai/deployments/{}",
                percent_encode_path(deployment)
            );
            Paths {
                chat: format!("{stem}/chat/completions?api-version={version}"),
                completions: format!("{stem}/completions?api-version={version}"),
                embeddings: format!("{stem}/embeddings?api-version={version}"),
                native_base: base.to_string(),
                health: format!("{base}/openai/models?api-version={version}"),
            }
        }
    }
}

fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_encode_query(s: &str) -> String {
    percent_encode_path(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_shapes() {
        let p = paths(PathStyle::OpenAi, "h", "/v1/", "m", None);
        assert_eq!(
            (p.chat.as_str(), p.health.as_str()),
            ("/v1/chat/completions", "/v1/models")
        );
        let p = paths(PathStyle::OpenAi, "h", "/openai/v1", "m", None);
        assert_eq!(p.embeddings, "/openai/v1/embeddings");
        let p = paths(PathStyle::Exact, "h", "", "m", None);
        assert_eq!(p.chat, "/chat/completions");
        let p = paths(PathStyle::Azure, "h", "/", "my gpt", None);
        assert_eq!(
            p.chat,
            format!("/openai/deployments/my%20gpt/chat/completions?api-version={AZURE_DEFAULT_API_VERSION}")
        );
        let foundry = "r.services.ai.azure.com";
        let p = paths(
            PathStyle::AzureAi,
            foundry,
            "",
            "m",
            Some("2024-05-01-preview"),
        );
        assert_eq!(
            p.chat,
            "/models/chat/completions?api-version=2024-05-01-preview"
        );
        let p = paths(PathStyle::AzureAi, foundry, "/models", "m", None);
        assert_eq!(p.embeddings, "/models/embeddings");
        let p = paths(
            PathStyle::AzureAi,
            "m.eastus2.models.ai.azure.com",
            "/",
            "m",
            None,
        );
        assert_eq!(p.chat, "/chat/completions");
        let p = paths(PathStyle::Azure, "h", "/", "my gpt", Some("2024-06-01"));
        assert_eq!(
            p.chat,
            "/openai/deployments/my%20gpt/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(p.health, "/openai/models?api-version=2024-06-01");
    }

    #[test]
    fn every_prefix_is_in_one_table_once() {
        let mut all: Vec<&str> = OPENAI_COMPATIBLE.iter().map(|r| r.prefix).collect();
        all.extend(UNSUPPORTED.iter().map(|(p, _)| *p));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(is_bare_openai_model("gpt-4o") && is_bare_openai_model("o3-mini"));
        assert!(!is_bare_openai_model("llama-3") && !is_bare_openai_model("claude-3"));
    }

    #[test]
    fn parameter_columns() {
        let row = |p| find(p).unwrap();
        assert!(row("groq").refused_params().is_empty());
        let mistral = row("mistral").refused_params();
        assert!(mistral.contains(&"logit_bias") && mistral.contains(&"stream_options"));
        assert!(!mistral.contains(&"tools") && !mistral.contains(&"stream"));
        assert!(row("perplexity").refused_params().contains(&"tools"));
        // Every listed parameter is one of OpenAI's: a typo would silently refuse its real name.
        for r in OPENAI_COMPATIBLE {
            for p in r.supports.unwrap_or_default() {
                assert!(OPENAI_CHAT_PARAMS.contains(p), "{}: {p}", r.prefix);
            }
            assert!(
                r.supports.is_none_or(|s| s.contains(&"stream")),
                "{}",
                r.prefix
            );
        }
        let fw = row("fireworks_ai");
        assert_eq!(
            fw.upstream_model("llama-v3p1-8b-instruct"),
            "accounts/fireworks/models/llama-v3p1-8b-instruct"
        );
        assert_eq!(
            fw.upstream_model("accounts/me/models/x"),
            "accounts/me/models/x"
        );
        assert_eq!(
            KeyHeader::ApiKeyOnAzureHosts.name_for("r.services.ai.azure.com"),
            "api-key"
        );
        assert_eq!(
            KeyHeader::ApiKeyOnAzureHosts.name_for("example.com"),
            "authorization"
        );
    }
}
