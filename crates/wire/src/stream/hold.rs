//! What a stream encoder holds back when its dialect sends tool calls whole and reports usage
//! on its last message (Gemini, Ollama): the arguments of open tool calls, and the finish until
//! usage arrives (or the stream ends). Text is never held.

use crate::canonical::{FinishReason, StreamEvent, Usage};

/// A tool call whose arguments are still arriving.
pub(crate) struct PendingCall {
    pub index: usize,
    /// The call's id (Gemini clients get it as `functionCall.id`).
    pub id: String,
    pub name: String,
    pub args: String,
}

/// What to write now, in order: complete tool calls, then (once) the last message.
#[derive(Default)]
pub(crate) struct Ready {
    pub calls: Vec<PendingCall>,
    pub last: Option<(FinishReason, Usage)>,
}

#[derive(Default)]
pub(crate) struct Held {
    calls: Vec<PendingCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    last_written: bool,
}

impl Held {
    /// Takes tool-call, finish and usage events; `None` for every other event, which the
    /// encoder writes itself after [`Held::calls`] (a new event completes the open calls).
    pub fn take(&mut self, event: &StreamEvent) -> Option<Ready> {
        match event {
            StreamEvent::ToolCallStart { index, id, name } => {
                self.calls.push(PendingCall {
                    index: *index,
                    id: id.clone(),
                    name: name.clone(),
                    args: String::new(),
                });
                Some(Ready::default())
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if let Some(c) = self.calls.iter_mut().rev().find(|c| c.index == *index) {
                    c.args.push_str(fragment);
                }
                Some(Ready::default())
            }
            StreamEvent::Finish(f) => {
                self.finish = Some(f.clone());
                Some(self.ready(self.usage.is_some()))
            }
            StreamEvent::Usage(u) => {
                self.usage = Some(*u);
                Some(self.ready(self.finish.is_some()))
            }
            _ => None,
        }
    }

    /// The open tool calls, complete now that another event arrived.
    pub fn calls(&mut self) -> Vec<PendingCall> {
        std::mem::take(&mut self.calls)
    }

    /// The stream ended: what is left, and the last message if it was not written yet.
    pub fn end(&mut self) -> Ready {
        self.ready(true)
    }

    fn ready(&mut self, last: bool) -> Ready {
        let last = (last && !self.last_written).then(|| {
            self.last_written = true;
            (
                self.finish.clone().unwrap_or_default(),
                self.usage.unwrap_or_default(),
            )
        });
        Ready {
            calls: self.calls(),
            last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_calls_and_the_finish_until_usage() {
        let mut h = Held::default();
        assert!(h.take(&StreamEvent::Text("x".into())).is_none());
        let start = StreamEvent::ToolCallStart {
            index: 0,
            id: "c".into(),
            name: "f".into(),
        };
        assert!(h.take(&start).is_some_and(|r| r.calls.is_empty()));
        let args = StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{}".into(),
        };
        assert!(h.take(&args).is_some_and(|r| r.calls.is_empty()));
        let r = h.take(&StreamEvent::Finish(FinishReason::ToolCalls));
        let r = r.unwrap_or_default();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].args, "{}");
        assert!(r.last.is_none(), "held until usage");
        let r = h.take(&StreamEvent::Usage(Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        }));
        let last = r.and_then(|r| r.last);
        assert_eq!(
            last.map(|(f, u)| (f, u.output_tokens)),
            Some((FinishReason::ToolCalls, 4))
        );
        assert!(h.end().last.is_none(), "the last message is written once");
    }

    #[test]
    fn end_writes_the_last_message_without_usage() {
        let mut h = Held::default();
        let _ = h.take(&StreamEvent::Finish(FinishReason::Stop));
        let last = h.end().last;
        assert_eq!(
            last.map(|(f, u)| (f, u.input_tokens)),
            Some((FinishReason::Stop, 0))
        );
    }
}
