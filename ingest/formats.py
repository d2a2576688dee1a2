"""The training-file formats OpenAI fine-tuning accepts, one JSON object per line.

- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str,
  "weight": 0|1 (assistant turns only)}]}`` with at least one assistant turn;
- prompt/completion: ``{"prompt": str, "completion": str}``;
- preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [{"role":
  "assistant", "content": str}], "non_preferred_output": [the same]}``: input messages as in
  chat but without ``weight`` (and no assistant turn needed), each output exactly one
  assistant message, the two outputs different.

Content is a non-empty string (not only whitespace); no other keys are allowed.

Two paths enforce the same rules. The fast path decodes straight into strict msgspec
structs (unknown keys, types, roles and where ``weight`` may appear are checked in C) and
leaves a few checks to the caller (``example_valid``): empty content, a missing assistant
turn, an empty preference input, two equal preference outputs. Any line the
fast path refuses goes to ``diagnose``, the slow path and the authority on what is wrong:
it names every fault with a machine-readable code. Fault messages never quote the line's
values; a key is named only when it looks like an identifier.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

CHAT: Final = "chat"
PROMPT_COMPLETION: Final = "prompt_completion"
PREFERENCE: Final = "preference"
Format = Literal["chat", "prompt_completion", "preference"]
FORMAT_CODES: Final = {CHAT: 1, PROMPT_COMPLETION: 2, PREFERENCE: 3}
FORMAT_NAMES: Final = {code: name for name, code in FORMAT_CODES.items()}
ROLES: Final = ("system", "user", "assistant")
BOM: Final = b"\xef\xbb\xbf"


class FaultCode:
    LINE_TOO_LONG = "line_too_long"
    BLANK_LINE = "blank_line"
    BOM = "bom"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_UNICODE = "invalid_unicode"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_FORMAT = "unknown_format"
    UNKNOWN_KEY = "unknown_key"
    MISSING_KEY = "missing_key"
    WRONG_TYPE = "wrong_type"
    INVALID_ROLE = "invalid_role"
    EMPTY_CONTENT = "empty_content"
    EMPTY_MESSAGES = "empty_messages"
    NO_ASSISTANT_TURN = "no_assistant_turn"
    WEIGHT_NOT_ALLOWED = "weight_not_allowed"
    INVALID_WEIGHT = "invalid_weight"
    MIXED_FORMAT = "mixed_format"
    INVALID_OUTPUT = "invalid_output"
    IDENTICAL_OUTPUTS = "identical_outputs"
    PII_FOUND = "pii_found"
    NO_EXAMPLES = "no_examples"


@dataclass(frozen=True, slots=True)
class LineFault:
    """What is wrong with one line (1-based; 0 for the file as a whole)."""

    line: int
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


# --- fast path -----------------------------------------------------------------------------


class SystemMessage(msgspec.Struct, tag_field="role", tag="system", forbid_unknown_fields=True):
    content: str


class UserMessage(msgspec.Struct, tag_field="role", tag="user", forbid_unknown_fields=True):
    content: str


class AssistantMessage(
    msgspec.Struct,
    tag_field="role",
    tag="assistant",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    content: str
    # UNSET, not None: an explicit null weight is a fault, as it is for OpenAI.
    weight: Literal[0, 1] | msgspec.UnsetType = msgspec.UNSET


Message = SystemMessage | UserMessage | AssistantMessage


class ChatExample(msgspec.Struct, forbid_unknown_fields=True):
    messages: list[Message]


class PromptCompletionExample(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str
    completion: str


class OutputMessage(msgspec.Struct, tag_field="role", tag="assistant", forbid_unknown_fields=True):
    """An assistant message of a preference example: no ``weight`` there."""

    content: str


InputMessage = SystemMessage | UserMessage | OutputMessage
OneOutput = Annotated[list[OutputMessage], msgspec.Meta(min_length=1, max_length=1)]


class PreferenceInput(msgspec.Struct, forbid_unknown_fields=True):
    messages: list[InputMessage]


class PreferenceExample(msgspec.Struct, forbid_unknown_fields=True):
    input: PreferenceInput
    preferred_output: OneOutput
    non_preferred_output: OneOutput


Example = ChatExample | PromptCompletionExample | PreferenceExample

DECODERS: Final[dict[str, msgspec.json.Decoder[Example]]] = {
    CHAT: msgspec.json.Decoder(ChatExample),
    PROMPT_COMPLETION: msgspec.json.Decoder(PromptCompletionExample),
    PREFERENCE: msgspec.json.Decoder(PreferenceExample),
}
_OTHERS: Final = {name: tuple(other for other in DECODERS if other != name) for name in DECODERS}
_FORMAT_OF: Final[dict[type, str]] = {
    ChatExample: CHAT,
    PromptCompletionExample: PROMPT_COMPLETION,
    PreferenceExample: PREFERENCE,
}
_ENCODER: Final = msgspec.json.Encoder()


def decode_example(raw: bytes, prefer: str = CHAT) -> Example | None:
    """The line as a struct of any format (``prefer`` tried first), or None: refused."""
    for name in (prefer, *_OTHERS[prefer]):
        try:
            return DECODERS[name].decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
    return None


def encode_example(example: Example) -> bytes:
    """Canonical compact JSON (fixed key order): equal examples encode to equal bytes."""
    return _ENCODER.encode(example)


def format_of(example: Example) -> str:
    return _FORMAT_OF[type(example)]


def is_blank(content: str) -> bool:
    return not content or content.isspace()


def contents_of(example: Example) -> list[str]:
    """Every text of the example, in line order (a preference example's input, then its
    preferred and its non-preferred output): what PII scans and redaction cover."""
    if type(example) is ChatExample:
        return [message.content for message in example.messages]
    if type(example) is PreferenceExample:
        return [
            *(message.content for message in example.input.messages),
            example.preferred_output[0].content,
            example.non_preferred_output[0].content,
        ]
    assert type(example) is PromptCompletionExample
    return [example.prompt, example.completion]


def preference_valid(example: PreferenceExample) -> bool:
    """The checks the strict decoder leaves to us for a preference example."""
    preferred = example.preferred_output[0].content
    return (
        bool(example.input.messages)
        and not any(map(is_blank, contents_of(example)))
        and preferred != example.non_preferred_output[0].content
    )


def with_contents(example: Example, contents: list[str]) -> Example:
    """The example with its texts replaced, in ``contents_of`` order (redaction)."""
    if type(example) is PreferenceExample:
        *inputs, preferred, non_preferred = contents
        messages = [
            type(message)(content=content)
            for message, content in zip(example.input.messages, inputs, strict=True)
        ]
        return PreferenceExample(
            input=PreferenceInput(messages=messages),
            preferred_output=[OutputMessage(content=preferred)],
            non_preferred_output=[OutputMessage(content=non_preferred)],
        )
    if type(example) is PromptCompletionExample:
        return PromptCompletionExample(prompt=contents[0], completion=contents[1])
    raise TypeError("chat examples keep their weights: see ingest.scanner")


# --- slow path -----------------------------------------------------------------------------

_SHOWABLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_CHAT_MESSAGE_KEYS = frozenset({"role", "content", "weight"})
_PROMPT_COMPLETION_KEYS = ("prompt", "completion")
_PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
_PREFERENCE_MESSAGE_KEYS = frozenset({"role", "content"})


def _key(name: str) -> str:
    return f"'{name}'" if _SHOWABLE_KEY.fullmatch(name) else "(a key not shown)"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def diagnose(raw: bytes) -> tuple[str | None, list[tuple[str, str]]]:
    """(the format the line meant, [(code, message), ...]); no faults means a valid line."""
    fmt, faults, _ = parse(raw)
    return fmt, faults


def parse(raw: bytes) -> tuple[str | None, list[tuple[str, str]], Example | None]:
    """The slow path: (format, faults, the example when there are no faults).

    A repeated key keeps its last value, as in ``json.loads`` and the fast path."""
    if raw.startswith(BOM):
        return None, [(FaultCode.BOM, "line starts with a UTF-8 byte order mark")], None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [(FaultCode.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start + 1}")], None
    if not text.strip():
        return None, [(FaultCode.BLANK_LINE, "blank line")], None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (column {exc.colno})"
        return None, [(FaultCode.INVALID_JSON, message)], None
    except ValueError:
        return None, [(FaultCode.INVALID_JSON, "not valid JSON: NaN or Infinity")], None
    if not isinstance(value, dict):
        return None, [(FaultCode.NOT_AN_OBJECT, "a line must be one JSON object")], None
    target: type[Example]
    if "messages" in value:
        fmt, faults, target = CHAT, _chat_faults(value), ChatExample
    elif "prompt" in value or "completion" in value:
        fmt, faults, target = (
            PROMPT_COMPLETION,
            _prompt_completion_faults(value),
            PromptCompletionExample,
        )
    elif any(key in value for key in _PREFERENCE_KEYS):
        fmt, faults, target = PREFERENCE, _preference_faults(value), PreferenceExample
    else:
        message = (
            "expected a 'messages' list (chat), 'prompt' and 'completion' strings, or "
            "'input', 'preferred_output' and 'non_preferred_output' (preference)"
        )
        return None, [(FaultCode.UNKNOWN_FORMAT, message)], None
    if faults:
        return fmt, faults, None
    return fmt, [], msgspec.convert(value, target)


def _content_faults(where: str, content: Any) -> list[tuple[str, str]]:
    if not isinstance(content, str):
        return [(FaultCode.WRONG_TYPE, f"{where} must be a string")]
    if is_blank(content):
        return [(FaultCode.EMPTY_CONTENT, f"{where} is empty")]
    if _has_lone_surrogate(content):
        return [(FaultCode.INVALID_UNICODE, f"{where} contains an unpaired surrogate")]
    return []


def _chat_faults(value: dict[str, Any]) -> list[tuple[str, str]]:
    faults = [
        (FaultCode.UNKNOWN_KEY, f"unknown key {_key(key)}") for key in value if key != "messages"
    ]
    messages = value["messages"]
    if not isinstance(messages, list):
        return [*faults, (FaultCode.WRONG_TYPE, "'messages' must be a list")]
    if not messages:
        return [*faults, (FaultCode.EMPTY_MESSAGES, "'messages' is empty")]
    has_assistant = False
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            faults.append((FaultCode.WRONG_TYPE, f"{where} must be an object"))
            continue
        faults.extend(
            (FaultCode.UNKNOWN_KEY, f"{where}: unknown key {_key(key)}")
            for key in message
            if key not in _CHAT_MESSAGE_KEYS
        )
        role = message.get("role")
        if "role" not in message:
            faults.append((FaultCode.MISSING_KEY, f"{where}: missing 'role'"))
        elif role not in ROLES:
            faults.append((FaultCode.INVALID_ROLE, f"{where}.role must be one of {ROLES}"))
        has_assistant = has_assistant or role == "assistant"
        if "content" not in message:
            faults.append((FaultCode.MISSING_KEY, f"{where}: missing 'content'"))
        else:
            faults.extend(_content_faults(f"{where}.content", message["content"]))
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                faults.append(
                    (FaultCode.WEIGHT_NOT_ALLOWED, f"{where}: 'weight' is for assistant turns")
                )
            elif type(weight) is not int or weight not in (0, 1):
                faults.append((FaultCode.INVALID_WEIGHT, f"{where}.weight must be 0 or 1"))
    if not has_assistant:
        faults.append((FaultCode.NO_ASSISTANT_TURN, "no assistant turn"))
    return faults


def _prompt_completion_faults(value: dict[str, Any]) -> list[tuple[str, str]]:
    faults = [
        (FaultCode.UNKNOWN_KEY, f"unknown key {_key(key)}")
        for key in value
        if key not in _PROMPT_COMPLETION_KEYS
    ]
    for key in _PROMPT_COMPLETION_KEYS:
        if key not in value:
            faults.append((FaultCode.MISSING_KEY, f"missing '{key}'"))
        else:
            faults.extend(_content_faults(f"'{key}'", value[key]))
    return faults


def _preference_message_faults(
    where: str, message: Any, roles: tuple[str, ...]
) -> list[tuple[str, str]]:
    if not isinstance(message, dict):
        return [(FaultCode.WRONG_TYPE, f"{where} must be an object")]
    faults = []
    for key in message:
        if key == "weight":
            faults.append(
                (FaultCode.WEIGHT_NOT_ALLOWED, f"{where}: 'weight' is not used in preference data")
            )
        elif key not in _PREFERENCE_MESSAGE_KEYS:
            faults.append((FaultCode.UNKNOWN_KEY, f"{where}: unknown key {_key(key)}"))
    if "role" not in message:
        faults.append((FaultCode.MISSING_KEY, f"{where}: missing 'role'"))
    elif message["role"] not in roles:
        shown = roles[0] if len(roles) == 1 else roles
        faults.append((FaultCode.INVALID_ROLE, f"{where}.role must be {shown!r}"))
    if "content" not in message:
        faults.append((FaultCode.MISSING_KEY, f"{where}: missing 'content'"))
    else:
        faults.extend(_content_faults(f"{where}.content", message["content"]))
    return faults


def _preference_faults(value: dict[str, Any]) -> list[tuple[str, str]]:
    faults = [
        (FaultCode.UNKNOWN_KEY, f"unknown key {_key(key)}")
        for key in value
        if key not in _PREFERENCE_KEYS
    ]
    if "input" not in value:
        faults.append((FaultCode.MISSING_KEY, "missing 'input'"))
    elif not isinstance(value["input"], dict):
        faults.append((FaultCode.WRONG_TYPE, "'input' must be an object"))
    else:
        given = value["input"]
        faults.extend(
            (FaultCode.UNKNOWN_KEY, f"input: unknown key {_key(key)}")
            for key in given
            if key != "messages"
        )
        messages = given.get("messages")
        if "messages" not in given:
            faults.append((FaultCode.MISSING_KEY, "input: missing 'messages'"))
        elif not isinstance(messages, list):
            faults.append((FaultCode.WRONG_TYPE, "input.messages must be a list"))
        elif not messages:
            faults.append((FaultCode.EMPTY_MESSAGES, "input.messages is empty"))
        else:
            for index, message in enumerate(messages):
                faults.extend(
                    _preference_message_faults(f"input.messages[{index}]", message, ROLES)
                )
    outputs: list[Any] = []
    for key in _PREFERENCE_KEYS[1:]:
        output = value.get(key)
        if key not in value:
            faults.append((FaultCode.MISSING_KEY, f"missing '{key}'"))
        elif not isinstance(output, list) or len(output) != 1:
            faults.append(
                (FaultCode.INVALID_OUTPUT, f"'{key}' must be a list of one assistant message")
            )
        else:
            found = _preference_message_faults(f"{key}[0]", output[0], ("assistant",))
            faults.extend(found)
            if not found:
                outputs.append(output[0]["content"])
    if len(outputs) == 2 and outputs[0] == outputs[1]:
        faults.append(
            (FaultCode.IDENTICAL_OUTPUTS, "the preferred and non-preferred outputs are the same")
        )
    return faults
