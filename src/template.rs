//! Chat → text prompt templates, for backends that take plain text (Triton).
//!
//! Renderings follow the model families' published chat formats (protocols.md section 6).

use std::collections::BTreeMap;

/// One chat message reduced to its text, roles normalised (`developer` → `system`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextMessage<'a> {
    pub role: Role,
    /// Borrowed from the request body unless JSON escapes had to be decoded.
    pub content: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" | "function" | "ipython" => Some(Role::Tool),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptTemplate {
    Llama3,
    Llama2,
    Mistral,
    ChatMl,
    /// LiteLLM's `roles` / `initial_prompt_value` / … form.
    Custom(CustomTemplate),
    /// Our default when nothing names a format: a plain transcript any base model continues.
    Transcript,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomTemplate {
    pub roles: BTreeMap<String, (String, String)>,
    pub initial_prompt_value: String,
    pub final_prompt_value: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl PromptTemplate {
    /// A named template, as `prompt_template` spells it.
    pub fn named(name: &str) -> Option<PromptTemplate> {
        match name {
            "llama3" | "llama-3" => Some(PromptTemplate::Llama3),
            "llama2" | "llama-2" => Some(PromptTemplate::Llama2),
            "mistral" => Some(PromptTemplate::Mistral),
            "chatml" | "qwen" => Some(PromptTemplate::ChatMl),
            "transcript" | "default" => Some(PromptTemplate::Transcript),
            _ => None,
        }
    }

    /// The template a model name implies, as LiteLLM guesses it; `Transcript` otherwise.
    pub fn infer_from_model_name(model: &str) -> PromptTemplate {
        let m = model.to_ascii_lowercase();
        if m.contains("llama-3") || m.contains("llama3") {
            PromptTemplate::Llama3
        } else if m.contains("llama-2") || m.contains("llama2") {
            PromptTemplate::Llama2
        } else if m.contains("mistral") || m.contains("mixtral") {
            PromptTemplate::Mistral
        } else if m.contains("qwen") || m.contains("chatml") {
            PromptTemplate::ChatMl
        } else {
            PromptTemplate::Transcript
        }
    }

    /// Stop sequences the format needs, so a backend that does not stop on its own does.
    pub fn stop_sequences(&self) -> &'static [&'static str] {
        match self {
            PromptTemplate::Llama3 => &["<|eot_id|>"],
            PromptTemplate::ChatMl => &["<|im_end|>"],
            PromptTemplate::Transcript => &["\nUser:"],
            _ => &[],
        }
    }

    pub fn render(&self, messages: &[TextMessage<'_>]) -> String {
        let capacity = messages.iter().map(|m| m.content.len() + 32).sum::<usize>() + 64;
        let mut out = String::with_capacity(capacity);
        match self {
            PromptTemplate::Llama3 => render_llama3(messages, &mut out),
            PromptTemplate::Llama2 => render_llama2(messages, &mut out),
            PromptTemplate::Mistral => render_mistral(messages, &mut out),
            PromptTemplate::ChatMl => render_chatml(messages, &mut out),
            PromptTemplate::Custom(t) => render_custom(t, messages, &mut out),
            PromptTemplate::Transcript => render_transcript(messages, &mut out),
        }
        out
    }
}

fn render_llama3(messages: &[TextMessage<'_>], out: &mut String) {
    out.push_str("<|begin_of_text|>");
    for m in messages {
        let role = match m.role {
            Role::Tool => "ipython",
            other => other.name(),
        };
        out.push_str("<|start_header_id|>");
        out.push_str(role);
        out.push_str("<|end_header_id|>\n\n");
        out.push_str(m.content.trim());
        out.push_str("<|eot_id|>");
    }
    out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/// System text is merged into the first user turn; each user turn opens `[INST]`, each
/// assistant turn closes with `</s>`.
fn render_llama2(messages: &[TextMessage<'_>], out: &mut String) {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.trim())
        .collect();
    let mut pending_system = if system.is_empty() {
        None
    } else {
        Some(system.join("\n"))
    };
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match m.role {
            Role::Assistant => {
                out.push(' ');
                out.push_str(m.content.trim());
                out.push_str(" </s>");
            }
            _ => {
                out.push_str("<s>[INST] ");
                if let Some(sys) = pending_system.take() {
                    out.push_str("<<SYS>>\n");
                    out.push_str(&sys);
                    out.push_str("\n<</SYS>>\n\n");
                }
                out.push_str(m.content.trim());
                out.push_str(" [/INST]");
            }
        }
    }
    if let Some(sys) = pending_system {
        // Only system messages: still give the model an instruction block to answer.
        out.push_str("<s>[INST] <<SYS>>\n");
        out.push_str(&sys);
        out.push_str("\n<</SYS>>\n\n [/INST]");
    }
}

/// Mistral has no system role: as its own chat template does, the system text goes before
/// the last user message, separated by a blank line.
fn render_mistral(messages: &[TextMessage<'_>], out: &mut String) {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.trim())
        .collect();
    let last_user = messages
        .iter()
        .rposition(|m| m.role != Role::System && m.role != Role::Assistant);
    out.push_str("<s>");
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System => {}
            Role::Assistant => {
                out.push(' ');
                out.push_str(m.content.trim());
                out.push_str("</s>");
            }
            _ => {
                out.push_str("[INST] ");
                if Some(i) == last_user && !system.is_empty() {
                    out.push_str(&system.join("\n"));
                    out.push_str("\n\n");
                }
                out.push_str(m.content.trim());
                out.push_str("[/INST]");
            }
        }
    }
    if last_user.is_none() && !system.is_empty() {
        out.push_str("[INST] ");
        out.push_str(&system.join("\n"));
        out.push_str("[/INST]");
    }
}

fn render_chatml(messages: &[TextMessage<'_>], out: &mut String) {
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.name());
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    out.push_str("<|im_start|>assistant\n");
}

fn render_custom(t: &CustomTemplate, messages: &[TextMessage<'_>], out: &mut String) {
    out.push_str(&t.bos_token);
    out.push_str(&t.initial_prompt_value);
    for m in messages {
        let (pre, post) = t
            .roles
            .get(m.role.name())
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .unwrap_or(("", ""));
        out.push_str(pre);
        out.push_str(&m.content);
        out.push_str(post);
        if m.role == Role::Assistant {
            out.push_str(&t.eos_token);
        }
    }
    out.push_str(&t.final_prompt_value);
}

fn render_transcript(messages: &[TextMessage<'_>], out: &mut String) {
    for m in messages {
        let label = match m.role {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool",
        };
        out.push_str(label);
        out.push_str(": ");
        out.push_str(m.content.trim());
        out.push('\n');
    }
    out.push_str("Assistant:");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> TextMessage<'_> {
        TextMessage {
            role,
            content: content.into(),
        }
    }

    fn conversation() -> Vec<TextMessage<'static>> {
        vec![
            msg(Role::System, "Be brief."),
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello!"),
            msg(Role::User, "Who are you?"),
        ]
    }

    #[test]
    fn llama3_matches_the_published_format() {
        let out = PromptTemplate::Llama3.render(&conversation());
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn llama2_merges_system_into_first_user_turn() {
        let out = PromptTemplate::Llama2.render(&conversation());
        assert_eq!(
            out,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Who are you? [/INST]"
        );
    }

    #[test]
    fn mistral_puts_system_before_last_user_message() {
        let out = PromptTemplate::Mistral.render(&conversation());
        assert_eq!(
            out,
            "<s>[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nWho are you?[/INST]"
        );
    }

    #[test]
    fn chatml_ends_with_open_assistant_turn() {
        let out = PromptTemplate::ChatMl.render(&conversation()[..2]);
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn custom_follows_litellm_semantics() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "user".to_string(),
            ("<|im_start|>user\n".to_string(), "<|im_end|>".to_string()),
        );
        roles.insert(
            "assistant".to_string(),
            (
                "<|im_start|>assistant\n".to_string(),
                "<|im_end|>".to_string(),
            ),
        );
        let t = PromptTemplate::Custom(CustomTemplate {
            roles,
            initial_prompt_value: "\n".into(),
            final_prompt_value: "\n".into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        });
        // The system role has no entry: no pre/post, content as is.
        let out = t.render(&conversation()[..3]);
        assert_eq!(
            out,
            "<s>\nBe brief.<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello!<|im_end|></s>\n"
        );
    }

    #[test]
    fn transcript_default_and_inference() {
        let out = PromptTemplate::Transcript.render(&conversation()[1..2]);
        assert_eq!(out, "User: Hi\nAssistant:");
        assert_eq!(
            PromptTemplate::infer_from_model_name("Meta-Llama-3-8B-Instruct"),
            PromptTemplate::Llama3
        );
        assert_eq!(
            PromptTemplate::infer_from_model_name("echo"),
            PromptTemplate::Transcript
        );
    }
}
