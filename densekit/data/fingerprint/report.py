"""The printed fingerprint: ``format_fingerprint(fp, suggestions)`` (one block per split, then the suggested
overrides) and ``format_value`` (a value as a Hydra command-line override writes it)."""

from __future__ import annotations

from .suggest import splits_of


def format_value(value) -> str:
    """A value as a Hydra command-line override writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _fmt_size(row) -> str:
    return " x ".join(f"{v:g}" for v in row)


def _fmt_pcts(p) -> str:
    return " / ".join(f"{v:.4g}" for v in p)


def format_fingerprint(fp: dict, suggestions: dict | None = None) -> str:
    """The printed report: one block per split, then the suggested overrides (changes first)."""
    lines = []
    for split, s in splits_of(fp).items():
        if "error" in s:
            lines += [f"== {split}: not available ==", f"  {s['error']}", ""]
            continue
        axes = " x ".join(s["axes"])
        lines.append(
            f"== {split}: {s['samples']} samples (read {s['read']}, {s['seconds']:g} s), "
            f"{s['dataset']}, {s['kind']} {s['ndim']}D from {s['source']} =="
        )
        if s["length"] != s["samples"]:
            lines.append(f"  epoch length     {s['length']}")
        if s.get("size"):
            z = s["size"]
            lines.append(
                f"  size ({axes})   min {_fmt_size(z['min'])}   median {_fmt_size(z['median'])}   "
                f"max {_fmt_size(z['max'])}   ({z['distinct']} distinct)"
            )
        if s.get("spacing"):
            z = s["spacing"]
            lines.append(
                f"  spacing mm       min {_fmt_size(z['min'])}   median {_fmt_size(z['median'])}   "
                f"max {_fmt_size(z['max'])}"
            )
        if s.get("orientation"):
            lines.append(f"  orientation      {', '.join(f'{k}: {v}' for k, v in s['orientation'].items())}")
        modes = f" (modes {', '.join(f'{k}: {v}' for k, v in s['modes'].items())})" if s["modes"] else ""
        lines.append(f"  channels         {', '.join(f'{k}: {v}' for k, v in s['channels'].items())}{modes}")
        lines.append(
            f"  dtype            {', '.join(f'{k}: {v}' for k, v in s['dtypes'].items())}"
            + (
                f"   targets {', '.join(f'{k}: {v}' for k, v in s['target_dtypes'].items())}"
                if s["target_dtypes"]
                else ""
            )
        )
        it = s.get("intensity", {})
        for c, p in enumerate(it.get("channels", [])):
            extra = ""
            if it.get("foreground") and it["foreground"][c]:
                f = it["foreground"][c]
                extra = f"   foreground {_fmt_pcts(f['percentiles'])} (mean {f['mean']:.4g}, std {f['std']:.4g})"
            lines.append(f"  intensity c{c}    p0.5 / p50 / p99.5 = {_fmt_pcts(p)}{extra}")
        if "nonzero_fraction" in it:
            lines.append(
                f"  nonzero voxels   {100 * it['nonzero_fraction']:.1f}%   modality guess "
                f"{', '.join(it['modality_guess'])}"
            )
        lab = s.get("labels")
        if lab:
            total = sum(lab["raw_values"].values()) or 1
            raw = ", ".join(f"{v} ({100 * c / total:.1f}%)" for v, c in list(lab["raw_values"].items())[:12])
            lines.append(f"  mask values      {raw}{' ...' if len(lab['raw_values']) > 12 else ''}")
            lines.append(
                "  classes          "
                + "   ".join(
                    f"{n} {100 * f:.2f}% ({p}/{lab['labelled_samples']})"
                    for n, f, p in zip(lab["class_names"], lab["class_frequency"], lab["class_presence"])
                )
            )
            share = lab["unknown_fraction"]
            unknown = f"; unknown values {100 * share:.2f}%" if share else ""
            lines.append(f"  ignore           {100 * lab['ignore_fraction']:.2f}% of label pixels{unknown}")
        for name in ("depth", "flow_magnitude"):
            if name in s:
                t = s[name]
                unit = t.get("unit", "px")
                lines.append(
                    f"  {name:<16} p0.5 / p50 / p99.5 = {_fmt_pcts(t['values'])} {unit}; valid "
                    f"{100 * t['valid_fraction']:.1f}%"
                )
        lines.append(f"  bad samples      {s['bad']['count']}")
        for b in s["bad"]["listed"][:10]:
            lines.append(f"    {b['reason']}")
        if s["bad"]["count"] > 10:
            lines.append(f"    ... and {s['bad']['count'] - 10} more")
        for w in s.get("warnings", []):
            lines.append(f"  warning: {w}")
        lines.append("")
    if suggestions:
        changes = {k: v for k, v in suggestions.items() if v.get("current") != v["value"]}
        kept = {k: v for k, v in suggestions.items() if k not in changes}
        lines.append("== suggested overrides ==")
        for key, s in changes.items():
            note = "" if s.get("supported", True) else "   [this config has no such key yet]"
            lines.append(f"  {key}={format_value(s['value'])}   # {s['reason']}{note}")
        for key, s in kept.items():
            lines.append(f"  (already set) {key}={format_value(s['value'])}")
        paste = [f"{k}={format_value(s['value'])}" for k, s in changes.items() if s.get("supported", True)]
        if paste:
            lines.append("  paste: " + " ".join(paste))
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["format_fingerprint", "format_value"]
