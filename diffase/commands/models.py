"""``diffase models``: list the checkpoints diffase can load by name, and where it looks."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list named checkpoints and the folders searched")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase import hub

    print("searched, in order:")
    for d in hub.search_dirs():
        print(f"  {d}{'' if d.is_dir() else '  (missing)'}")
    names = hub.list_models()
    print("models:" if names else "models: none found")
    for name in names:
        print(f"  {name}  ({hub.find_checkpoint(name)})")
    return 0
