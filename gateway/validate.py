"""The OpenAI chat-completions request, checked field by field: a wrong type or shape is a 400
whose ``param`` names the field (``messages[2].tool_calls[0].function.arguments``).

Pure: :func:`check_request` takes the parsed body and raises :class:`InvalidRequest`, or returns
whether it normalised something in place (then the body must be re-serialised). Rules:

- Known fields are checked as the OpenAI API reference documents them; ``null`` for an optional
  field means unset, as OpenAI takes it. Unknown fields pass through untouched: providers take
  extensions (``top_k``, ``min_p``, ``chat_template_kwargs``, ``thinking``...).
- A tool call's ``function.arguments`` may be an object, as some clients send it and as
  OpenAI-compatible servers (vLLM, llama.cpp) accept it: it is normalised to its JSON text, the
  form every upstream takes. Any other non-string is a 400.
- Only ``function`` tools are taken (no upstream of this gateway serves OpenAI's ``custom`` ones).
- Depth: the body is re-serialised by orjson when the model is rewritten or the transcript
  repaired, and orjson writes at most 254 levels of nesting (it reads 1024). What is checked here
  is shallow by construction, so only what it does not look into is measured, by one orjson dump
  each: a top-level field that may hold free-form JSON (``tools`` with their parameter schemas,
  ``response_format``, unknown fields...), and the values of keys a message does not know. Too
  deep is a 400 naming that field; no body is refused that could be forwarded.

Speed: this runs on every request. The common messages (a plain role with string content, a
tool result, an assistant's tool calls) and tools pass a few tests each; others get the full
check. Checks raise a bare ``_Bad``
whose path is filled in as it propagates (try blocks cost nothing until one raises), so no path
string is built for a valid request. Objects are checked by counting the keys they hold that
are known, so an unknown key costs a scan only when there is one.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .errors import InvalidRequest

MAX_DEPTH = 254  # orjson.dumps refuses deeper values ("Recursion limit reached")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLES = frozenset(ROLES)
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})  # valid with just string content
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})
_MISSING: Any = object()
_NUMBER = (int, float)  # bool is a subclass of int: types are compared with ``.__class__``
_OPTIONAL_BOOL = (bool, type(None))
_OPTIONAL_STR = (str, type(None))


# ---- errors: a bare exception on the way up, a full message at the top -------------------------

class _Bad(Exception):
    """A check that failed; each container it sits in adds its key or index on the way out."""

    def __init__(self, kind: str, detail: str, value: object = None) -> None:
        self.kind = kind  # "type" (detail: what was expected), "value", "missing" or "deep"
        self.detail = detail
        self.value = value
        self.path: list[str | int] = []

    def at(self, segment: str | int) -> _Bad:
        self.path.append(segment)
        return self

    def param(self) -> str:
        out = ""
        for segment in reversed(self.path):
            if isinstance(segment, int):
                out += f"[{segment}]"
            else:  # a client's key: shortened past any sane length
                out += f".{segment}" if len(segment) <= 64 else f".{segment[:61]}..."
        return out[1:]

    def error(self) -> InvalidRequest:
        param = self.param()
        top = self.path[-1]
        code = "invalid_max_tokens" if top in ("max_tokens", "max_completion_tokens") else f"invalid_{top}"
        if self.kind == "type":
            message = f"Invalid type for '{param}': expected {self.detail}, but got {_kind(self.value)} instead."
        elif self.kind == "missing":
            message = f"Missing required parameter: '{param}'."
        elif self.kind == "deep":
            message = (f"Invalid '{param}': JSON nested deeper than {MAX_DEPTH} levels in all, the most the "
                       "gateway can forward.")
            code = "nested_too_deep"
        else:
            message = f"Invalid value for '{param}': {self.detail}."
        return InvalidRequest(message, param=param, code=code)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if value.__class__ is bool:
        return "a boolean"
    names = {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "an object"}
    return names.get(value.__class__, value.__class__.__name__)


def _shown(value: object) -> str:
    """A value for an error message: a scalar, shortened; never the repr of an array or object
    (one nested 1,000 levels deep, as orjson reads, would overflow the stack)."""
    if value is None or value.__class__ in (str, int, float, bool):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return _kind(value)


def _type(expected: str, value: object) -> _Bad:
    return _Bad("type", expected, value)


def _value(detail: str) -> _Bad:
    return _Bad("value", detail)


def _missing(key: str) -> _Bad:
    return _Bad("missing", "").at(key)


def _one_of(options: Iterable[str]) -> str:
    return "one of " + ", ".join(repr(o) for o in options)


def fits(value: object, depth: int) -> None:
    """Raise unless ``value``, sitting ``depth`` levels deep in the body (a top-level field is at
    2), can be written by orjson: one dump, wrapped in as many arrays as it has levels above it."""
    while depth > 1:
        value = [value]
        depth -= 1
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise _Bad("deep", "") from None


# ---- scalars ------------------------------------------------------------------------------------

Check = Callable[[Any], None]


def _is(cls: type, expected: str) -> Check:
    """The check that a value is exactly of ``cls`` (so ``true`` is no integer)."""

    def check(value: Any) -> None:
        if value.__class__ is not cls:
            raise _type(expected, value)

    return check


_string = _is(str, "a string")
_boolean = _is(bool, "a boolean")
_any_integer = _is(int, "an integer")
_object = _is(dict, "an object")


def _optional_string(value: Any) -> None:
    if value is not None and value.__class__ is not str:
        raise _type("a string or null", value)


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> None:
        if value.__class__ not in _NUMBER:
            raise _type("a number", value)
        if not low <= value <= high:
            raise _value(f"expected a number from {low:g} to {high:g}, but got {_shown(value)}")

    return check


def _integer(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> None:
        if value.__class__ is not int:
            raise _type("an integer", value)
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise _value(f"expected an integer {bound}, but got {_shown(value)}")

    return check


def _choice(*options: str) -> Check:
    def check(value: Any) -> None:
        if value.__class__ is not str:
            raise _type("a string", value)
        if value not in options:
            raise _value(f"expected {_one_of(options)}, but got {_shown(value)}")

    return check


def _name(value: Any) -> None:
    if value.__class__ is not str:
        raise _type("a string", value)
    if not value:
        raise _value("a function needs a non-empty name")


def _field(obj: dict, key: str, check: Check, required: bool = False) -> int:
    """Check ``obj[key]`` when it is there and not null; 1 when the key is there."""
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise _missing(key)
        return 0
    if value is None:
        if required:
            raise _type("a value", None).at(key)
        return 1
    try:
        check(value)
    except _Bad as e:
        raise e.at(key) from None
    return 1


def _required_string(obj: dict, key: str) -> str:
    """``obj[key]``, which must be a string."""
    value = obj.get(key, _MISSING)
    if value.__class__ is not str:
        raise _missing(key) if value is _MISSING else _type("a string", value).at(key)
    return value


def _each(items: list, check: Check, plain: Callable[[Any], bool] | None = None) -> None:
    """``check`` each item, naming its index on failure; ``plain`` passes the common shape at once."""
    for i, item in enumerate(items):
        if plain is not None and plain(item):
            continue
        try:
            check(item)
        except _Bad as e:
            raise e.at(i) from None


def _strings(value: Any) -> None:
    if value.__class__ is not list:
        raise _type("an array of strings", value)
    _each(value, _string)


def _string_or_array(item: Check, expected: str) -> Check:
    """A string, or an array whose items pass ``item``."""

    def check(value: Any) -> None:
        if value.__class__ is not str:
            if value.__class__ is not list:
                raise _type(expected, value)
            _each(value, item)

    return check


_stop = _string_or_array(_string, "a string or an array of strings")


def _metadata(value: Any) -> None:
    if value.__class__ is not dict:
        raise _type("an object of strings", value)
    for key, item in value.items():
        if item.__class__ is not str:
            raise _type("a string", item).at(key)


def _logit_bias(value: Any) -> None:
    if value.__class__ is not dict:
        raise _type("an object mapping token ids to numbers", value)
    for key, bias in value.items():
        if not (key.isascii() and key.isdigit()):
            raise _value(f"keys are token ids (digits), but got {_shown(key)}")
        if bias.__class__ not in _NUMBER:
            raise _type("a number", bias).at(key)
        if not -100 <= bias <= 100:
            raise _value(f"expected a number from -100 to 100, but got {_shown(bias)}").at(key)


# ---- top-level objects (those that may hold free-form JSON are ``_measured`` too) --------------

_STREAM_OPTIONS = frozenset({"include_usage", "include_obfuscation"})


def _stream_options(value: Any) -> None:
    _object(value)
    _field(value, "include_usage", _boolean)
    _field(value, "include_obfuscation", _boolean)
    if not _STREAM_OPTIONS.issuperset(value):
        fits(value, 2)


def _parameters(value: Any) -> None:
    if value.__class__ is not dict:
        raise _type("a JSON Schema object", value)


def _function_def(fn: Any) -> None:
    _object(fn)
    _field(fn, "name", _name, required=True)
    _field(fn, "description", _string)
    _field(fn, "parameters", _parameters)
    _field(fn, "strict", _boolean)


def _function_type(kind: Any) -> None:
    if kind != "function":
        raise _value(f"only 'function' tools are supported, but got {_shown(kind)}")


def _tool(tool: Any) -> None:
    _object(tool)
    _field(tool, "type", _function_type, required=True)
    _field(tool, "function", _function_def, required=True)


def _plain_function(fn: Any) -> bool:
    """The common function definition, in one pass of tests (no path built)."""
    if fn.__class__ is not dict or (name := fn.get("name")).__class__ is not str or not name:
        return False
    description = fn.get("description")
    parameters = fn.get("parameters")
    return (description is None or description.__class__ is str) and (
        parameters is None or parameters.__class__ is dict
    ) and fn.get("strict").__class__ in _OPTIONAL_BOOL


def _plain_tool(tool: Any) -> bool:
    return tool.__class__ is dict and tool.get("type") == "function" and _plain_function(tool.get("function"))


def _tools(value: Any) -> None:
    if value.__class__ is not list:
        raise _type("an array of tools", value)
    _each(value, _tool, _plain_tool)


def _functions(value: Any) -> None:
    """The deprecated ``functions``: bare function definitions."""
    if value.__class__ is not list:
        raise _type("an array of functions", value)
    _each(value, _function_def)


def _named(value: Any) -> None:
    _object(value)
    _field(value, "name", _name, required=True)


_TOOL_CHOICES = ("none", "auto", "required")


def _tool_choice(value: Any) -> None:
    if value.__class__ is str:
        if value not in _TOOL_CHOICES:
            raise _value(f"expected {_one_of(_TOOL_CHOICES)} or a named function, but got {_shown(value)}")
        return
    if value.__class__ is not dict:
        raise _type(f"{_one_of(_TOOL_CHOICES)} or an object", value)
    _field(value, "type", _function_type, required=True)
    _field(value, "function", _named, required=True)


def _function_call(value: Any) -> None:
    """The deprecated ``function_call`` choice."""
    if value.__class__ is str:
        if value not in ("none", "auto"):
            raise _value(f"expected 'none', 'auto' or a named function, but got {_shown(value)}")
        return
    _named(value)


def _json_schema(value: Any) -> None:
    _object(value)
    _field(value, "name", _string)
    _field(value, "description", _string)
    _field(value, "schema", _parameters)
    _field(value, "strict", _boolean)


_FORMAT_TYPE = _choice("text", "json_object", "json_schema")


def _response_format(value: Any) -> None:
    _object(value)
    _field(value, "type", _FORMAT_TYPE, required=True)
    if value["type"] == "json_schema":
        _field(value, "json_schema", _json_schema, required=True)


_CONTENT_TYPE = _choice("content")
_TEXT_TYPE = _choice("text")


def _text_part(part: Any) -> None:
    _object(part)
    _field(part, "type", _TEXT_TYPE, required=True)
    _field(part, "text", _string, required=True)


_text_parts = _string_or_array(_text_part, "a string or an array of text parts")


def _prediction(value: Any) -> None:
    _object(value)
    _field(value, "type", _CONTENT_TYPE, required=True)
    _field(value, "content", _text_parts, required=True)


def _measured(check: Check) -> Check:
    """``check``, then one dump measuring the whole field for depth (it may hold free-form JSON)."""

    def measured(value: Any) -> None:
        check(value)
        if value.__class__ is dict or value.__class__ is list:
            fits(value, 2)

    return measured


def _skip(value: Any) -> None:
    """``messages``: checked on their own, last."""


_FIELDS: dict[str, Check] = {
    "messages": _skip,
    "model": _string,
    "stream": _boolean,
    "stream_options": _stream_options,
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "n": _integer(1),
    "stop": _stop,
    "max_tokens": _integer(1),
    "max_completion_tokens": _integer(1),
    "seed": _any_integer,
    "logprobs": _boolean,
    "top_logprobs": _integer(0, 20),
    "logit_bias": _logit_bias,
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,
    "prompt_cache_retention": _string,
    "tools": _measured(_tools),
    "tool_choice": _measured(_tool_choice),
    "parallel_tool_calls": _boolean,
    "functions": _measured(_functions),
    "function_call": _measured(_function_call),
    "response_format": _measured(_response_format),
    "reasoning_effort": _string,
    "verbosity": _string,
    "service_tier": _string,
    "store": _boolean,
    "metadata": _metadata,
    "modalities": _strings,
    "audio": _measured(_object),
    "prediction": _measured(_prediction),
    "web_search_options": _measured(_object),
}


def check_fields(payload: dict) -> None:
    """Every top-level field but ``messages``. Checks of fields that may hold free-form JSON
    measure it themselves (``_measured``); an unknown array or object is measured here."""
    fields = _FIELDS
    for key, value in payload.items():
        try:
            check = fields.get(key)
            if check is not None:
                if value is not None:
                    check(value)
            elif value.__class__ is dict or value.__class__ is list:
                fits(value, 2)
        except _Bad as e:
            if e.kind == "deep":  # name the part of a known field that is too deep
                e.path = _locate(value, 2, _KNOWN_LEVELS.get(key, 0))
            raise e.at(key).error() from None


# how many levels of a known field are named when it is too deep (``tools[1].function.parameters``)
_KNOWN_LEVELS = {"tools": 3, "functions": 2, "response_format": 2, "prediction": 2, "tool_choice": 2}


def _locate(value: Any, depth: int, levels: int) -> list[str | int]:
    """The path (innermost first) of the first too-deep child of ``value``, ``levels`` down at most."""
    path: list[str | int] = []
    while levels and (value.__class__ is dict or value.__class__ is list):
        children = value.items() if value.__class__ is dict else enumerate(value)
        for segment, child in children:
            try:
                fits(child, depth + 1)
            except _Bad:
                path.insert(0, segment)
                value, depth = child, depth + 1
                break
        else:
            break
        levels -= 1
    return path


# ---- messages -----------------------------------------------------------------------------------

def _rest(obj: dict, known: int, keys: frozenset[str], depth: int) -> None:
    """Measure the values of ``obj``'s unknown keys, when it has any (``obj`` is ``depth`` deep)."""
    if len(obj) > known:
        for key, value in obj.items():
            if key not in keys and (value.__class__ is dict or value.__class__ is list):
                try:
                    fits(value, depth + 1)
                except _Bad as e:
                    raise e.at(key) from None


def _image_url(value: Any) -> None:
    if value.__class__ is str:  # some clients send the URL itself
        return
    if value.__class__ is not dict:
        raise _type("an object with a 'url' (or the URL string)", value)
    known = _field(value, "url", _string, required=True) + _field(value, "detail", _string)
    _rest(value, known, frozenset({"url", "detail"}), 6)


def _input_audio(value: Any) -> None:
    _object(value)
    known = _field(value, "data", _string, required=True) + _field(value, "format", _string, required=True)
    _rest(value, known, frozenset({"data", "format"}), 6)


_FILE = frozenset({"file_data", "file_id", "filename"})


def _file(value: Any) -> None:
    _object(value)
    known = _field(value, "file_data", _string) + _field(value, "file_id", _string) + _field(
        value, "filename", _string
    )
    _rest(value, known, _FILE, 6)


# part type -> (its field, that field's check); other types pass with their bodies unchecked
_PART_FIELDS: dict[str, tuple[str, Check]] = {
    "text": ("text", _string),
    "refusal": ("refusal", _string),
    "image_url": ("image_url", _image_url),
    "input_audio": ("input_audio", _input_audio),
    "file": ("file", _file),
}
_PART_KEYS = {kind: frozenset({"type", key}) for kind, (key, _) in _PART_FIELDS.items()}
_TYPE = frozenset({"type"})


def _part(part: Any) -> None:
    """A content part of a message (5 deep in the body; its fields' values at 6)."""
    if part.__class__ is not dict:
        raise _type("an object", part)
    kind = _required_string(part, "type")
    spec = _PART_FIELDS.get(kind)
    if spec is None:
        _rest(part, 1, _TYPE, 5)  # a type this gateway does not know: its body is measured
        return
    key, check = spec
    _field(part, key, check, required=True)
    _rest(part, 2, _PART_KEYS[kind], 5)


def _parts(parts: list) -> None:
    """A message's content parts."""
    for j, part in enumerate(parts):
        # the common part in one test: text, and nothing else
        if part.__class__ is dict and len(part) == 2 and part.get("type") == "text" and (
            part.get("text").__class__ is str
        ):
            continue
        try:
            _part(part)
        except _Bad as e:
            raise e.at(j) from None


def _content(m: dict, role: str) -> int:
    """Check a message's ``content``; 1 when the key is there."""
    content = m.get("content", _MISSING)
    if content.__class__ is str:
        return 1
    if content.__class__ is list:
        try:
            _parts(content)
        except _Bad as e:
            raise e.at("content") from None
        return 1
    required = role in _CONTENT_REQUIRED
    if content is _MISSING:
        if required:
            raise _missing("content")
        return 0
    if content is None and not required:
        return 1
    raise _type("a string or an array of content parts" + ("" if required else " or null"), content).at("content")


_CALL_FUNCTION = frozenset({"name", "arguments"})
_CALL = frozenset({"id", "type", "function"})


def _arguments(fn: dict, args: Any) -> None:
    """Object ``arguments`` become their JSON text, in place; other types are refused."""
    if args is _MISSING:
        raise _missing("arguments")
    if args.__class__ is not dict:
        raise _type("a string of JSON (or an object)", args).at("arguments")
    try:
        fn["arguments"] = orjson.dumps(args).decode()
    except orjson.JSONEncodeError:
        raise _Bad("deep", "").at("arguments") from None


def _call(call: Any) -> bool:
    """One tool call of an assistant message; True when its arguments were normalised."""
    if call.__class__ is not dict:
        raise _type("an object", call)
    _required_string(call, "id")
    known = 2
    kind = call.get("type", _MISSING)
    if kind is not _MISSING:
        if kind is not None and kind != "function":
            raise _value(f"expected 'function', but got {_shown(kind)}").at("type")
        known = 3
    fn = call.get("function", _MISSING)
    if fn.__class__ is not dict:
        raise _missing("function") if fn is _MISSING else _type("an object", fn).at("function")
    changed = False
    try:
        _required_string(fn, "name")
        args = fn.get("arguments", _MISSING)
        if args.__class__ is not str:
            _arguments(fn, args)
            changed = True
        _rest(fn, 2, _CALL_FUNCTION, 6)
    except _Bad as e:
        raise e.at("function") from None
    _rest(call, known, _CALL, 5)
    return changed


def _tool_calls(calls: Any) -> bool:
    """An assistant message's ``tool_calls``; True when some call's arguments were normalised."""
    if calls.__class__ is not list:
        raise _type("an array of tool calls", calls)
    changed = False
    for j, call in enumerate(calls):
        try:
            if _call(call):
                changed = True
        except _Bad as e:
            raise e.at(j) from None
    return changed


def _legacy_call(value: Any) -> None:
    """An assistant message's deprecated ``function_call``: ``{name, arguments}`` strings."""
    _object(value)
    known = _field(value, "name", _string, required=True) + _field(value, "arguments", _string, required=True)
    _rest(value, known, _CALL_FUNCTION, 4)


def _audio_ref(value: Any) -> None:
    _object(value)
    fits(value, 4)


_ASSISTANT_FIELDS = frozenset({"role", "content", "name", "tool_calls", "reasoning_content", "refusal",
                               "function_call", "audio"})
_TOOL_FIELDS = frozenset({"role", "content", "tool_call_id", "name"})
_OTHER_FIELDS = frozenset({"role", "content", "name"})
_FIELDS_OF = {"assistant": _ASSISTANT_FIELDS, "tool": _TOOL_FIELDS}


def _check_message(m: Any) -> bool:
    """The full check of one message; True when it normalised something."""
    if m.__class__ is not dict:
        raise _type("an object", m)
    role = m.get("role", _MISSING)
    if role.__class__ is not str or role not in _ROLES:
        if role is _MISSING:
            raise _missing("role")
        if role.__class__ is not str:
            raise _type("a string", role).at("role")
        raise _value(f"expected {_one_of(ROLES)}, but got {_shown(role)}").at("role")
    known = 1 + _content(m, role)
    changed = False
    if role == "assistant":
        calls = m.get("tool_calls", _MISSING)
        if calls is not _MISSING:
            known += 1
            if calls is not None:
                try:
                    changed = _tool_calls(calls)
                except _Bad as e:
                    raise e.at("tool_calls") from None
    elif role == "tool":
        _required_string(m, "tool_call_id")
        known += 1
    if len(m) > known or role == "function":
        known += _field(m, "name", _string, required=role == "function")
        if role == "assistant":
            known += (
                _field(m, "reasoning_content", _optional_string)
                + _field(m, "refusal", _optional_string)
                + _field(m, "function_call", _legacy_call)
                + _field(m, "audio", _audio_ref)
            )
        _rest(m, known, _FIELDS_OF.get(role, _OTHER_FIELDS), 3)
    return changed


def _plain_calls(calls: Any) -> bool:
    """The common ``tool_calls``, in one pass of tests: ids, function names and arguments strings."""
    if calls.__class__ is not list or not calls:
        return False
    for call in calls:
        if call.__class__ is not dict or len(call) != 3 or call.get("id").__class__ is not str or (
            call.get("type") != "function"
        ):
            return False
        fn = call.get("function")
        if fn.__class__ is not dict or len(fn) != 2 or fn.get("name").__class__ is not str or (
            fn.get("arguments").__class__ is not str
        ):
            return False
    return True


def check_messages(messages: list) -> bool:
    """Every message; True when one was normalised."""
    changed = False
    plain = _PLAIN_ROLES
    plain_calls = _plain_calls
    optional_str = _OPTIONAL_STR
    for m in messages:
        # the common messages in a few tests each: a plain role with string content, a tool
        # result, an assistant's tool calls; anything else gets the full check
        if m.__class__ is dict and (role := m.get("role")).__class__ is str:
            content = m.get("content")
            n = len(m)
            if content.__class__ is str:
                if n == 2:
                    if role in plain:
                        continue
                elif n == 3 and role == "tool" and m.get("tool_call_id").__class__ is str:
                    continue
            if n == 3 and role == "assistant" and content.__class__ in optional_str and plain_calls(
                m.get("tool_calls")
            ):
                continue
        try:
            if _check_message(m):
                changed = True
        except _Bad as e:
            index = next(i for i, other in enumerate(messages) if other is m)
            raise e.at(index).at("messages").error() from None
    return changed


def check_request(payload: dict) -> bool:
    """Check a parsed chat request (an object with a non-empty ``messages`` array); raise
    InvalidRequest naming the first bad field. True when something was normalised in place."""
    check_fields(payload)
    return check_messages(payload["messages"])
