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
}

/// One OpenAI-compatible provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub prefix: &'static str,
    /// Where requests go when `api_base` is not given (`None`: `api_base` is required).
    pub default_base: Option<&'static str>,
    pub paths: PathStyle,
    /// The header the upstream key goes in: `authorization` (as `Bearer <key>`) or `api-key`.
    pub key_header: &'static str,
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
        key_header: "authorization",
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
        key_header: "api-key",
        ..row("azure", None, PathStyle::Azure)
    },
    row("azure_ai", None, PathStyle::Exact),
    row(
        "groq",
        Some("https://api.groq.com/openai/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "mistral",
        Some("https://api.mistral.ai/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        PathStyle::OpenAi,
    ),
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
    row("xai", Some("https://api.x.ai/v1"), PathStyle::OpenAi),
    row(
        "perplexity",
        Some("https://api.perplexity.ai"),
        PathStyle::Exact,
    ),
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
    row(
        "nvidia_nim",
        Some("https://integrate.api.nvidia.com/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "deepinfra",
        Some("https://api.deepinfra.com/v1/openai"),
        PathStyle::Exact,
    ),
    row(
        "cerebras",
        Some("https://api.cerebras.ai/v1"),
        PathStyle::OpenAi,
    ),
    row(
        "sambanova",
        Some("https://api.sambanova.ai/v1"),
        PathStyle::OpenAi,
    ),
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

pub fn paths(style: PathStyle, base_path: &str, deployment: &str, api_version: &str) -> Paths {
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
        PathStyle::Azure => {
            let version = percent_encode_query(api_version);
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
        let p = paths(PathStyle::OpenAi, "/v1/", "m", "");
        assert_eq!(
            (p.chat.as_str(), p.health.as_str()),
            ("/v1/chat/completions", "/v1/models")
        );
        let p = paths(PathStyle::OpenAi, "/openai/v1", "m", "");
        assert_eq!(p.embeddings, "/openai/v1/embeddings");
        let p = paths(PathStyle::Exact, "", "m", "");
        assert_eq!(p.chat, "/chat/completions");
        let p = paths(PathStyle::Azure, "/", "my gpt", "2024-06-01");
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
}
