#!/usr/bin/env python3
"""Reads a detourd status page, as served (curl) or as Chromium's DOM after
the script ran (cdp.py --dom), with an HTML parser, into what the tests
check, so that the two can be compared.

usage: page.py FILE EXPR

EXPR is a Python expression over d, the page:
  d["compact"]       True if the pools are <details> (the compact mode)
  d["pools"][NAME]   per pool section: "details" (bool), "open" (bool),
                     "pill" (the all-down pill's text or None), "why",
                     "sc" (where traffic goes, compact mode), "su" ("3/4 up"),
                     "worst" and "worst_cls" (the worst state pill),
                     "share_title", "share_sub" (the share column's header),
                     "rows" {REGION: row}
  row                "cls" (the tr's class), "state" (data-state),
                     "pill_cls" (the state pill's class), "text" (the row),
                     "cells" {LABEL: text}, "titles" {LABEL: title},
                     "cell_cls" {LABEL: class}; the share cell's "recent"
                     (its data-recent, an int), "share" (its text) and
                     "share_label" (its data-label)
  d["maint"]         {WINDOW: the maintenance row's class}
  d["text"]          the whole page's text
and N(text): text with every number as "#". The value is printed: a string
as it is, anything else as JSON."""

import html.parser
import json
import re
import sys

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.kids = tag, dict(attrs), parent, []

    def text(self):
        return "".join(k if isinstance(k, str) else k.text() for k in self.kids)

    def all(self, pred):
        for k in self.kids:
            if isinstance(k, Node):
                if pred(k):
                    yield k
                yield from k.all(pred)

    def first(self, pred):
        return next(self.all(pred), None)

    def cls(self):
        return (self.attrs.get("class") or "").split()


class Tree(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.kids.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        if self.cur.tag not in ("script", "style"):
            self.cur.kids.append(data)


def norm(s):
    return " ".join((s or "").split())


def has(c):
    return lambda n: c in n.cls()


def page(path):
    t = Tree()
    with open(path, encoding="utf-8", errors="replace") as f:
        t.feed(f.read())
    root = t.root
    d = {"compact": root.first(lambda n: n.tag == "details") is not None, "pools": {}, "maint": {},
         "text": norm(root.first(lambda n: n.tag == "body").text())}
    for sec in root.all(lambda n: n.tag == "section" and "pool" in n.cls()):
        det = sec.first(lambda n: n.tag == "details")
        pill, why = sec.first(has("pill")), sec.first(lambda n: n.tag == "p" and "why" in n.cls())
        worst = sec.first(lambda n: n.tag == "span" and "st" in n.cls() and n.parent.tag == "span" and "sum" in n.parent.cls())
        sc, su = sec.first(has("sc")), sec.first(has("su"))
        share = sec.first(lambda n: n.tag == "th" and n.attrs.get("scope") == "col" and norm(n.text()).startswith("share"))
        p = {"details": det is not None, "open": det is not None and "open" in det.attrs,
             "pill": norm(pill.text()) if pill else None, "why": norm(why.text()) if why else None,
             "sc": norm(sc.text()) if sc else None, "su": norm(su.text()) if su else None,
             "worst": norm(worst.text()) if worst else None, "worst_cls": worst.attrs.get("class") if worst else None,
             "share_title": share.attrs.get("title") if share else None,
             "share_sub": norm(share.first(has("d")).text()) if share and share.first(has("d")) else None,
             "rows": {}}
        for tr in sec.all(lambda n: n.tag == "tr" and "data-region" in n.attrs):
            cells = [c for c in tr.kids if isinstance(c, Node) and c.tag == "td"]
            st = tr.first(lambda n: n.tag == "span" and "st" in n.cls())
            sh = [c for c in cells if "data-recent" in c.attrs]
            p["rows"][tr.attrs["data-region"]] = {
                "cls": tr.attrs.get("class"), "state": tr.attrs.get("data-state"),
                "pill_cls": st.attrs.get("class") if st else None,
                "text": norm(" ".join(_texts(tr))),
                "cells": {c.attrs.get("data-label"): norm(" ".join(_texts(c))) for c in cells},
                "titles": {c.attrs.get("data-label"): c.attrs.get("title") for c in cells},
                "cell_cls": {c.attrs.get("data-label"): c.attrs.get("class") for c in cells},
                "recent": int(sh[0].attrs["data-recent"]) if sh else None,
                "share": norm(" ".join(_texts(sh[0]))) if sh else None,
                "share_label": sh[0].attrs.get("data-label") if sh else None}
        d["pools"][sec.attrs.get("data-pool")] = p
    for tr in root.all(lambda n: n.tag == "tr" and "data-window" in n.attrs):
        d["maint"][tr.attrs["data-window"]] = tr.attrs.get("class")
    return d


def _texts(n):
    """The texts of n, one per element, so that "drain" and "config" in
    <td>drain<span>config</span></td> read as two words."""
    out = []
    for k in n.kids:
        if isinstance(k, str):
            out.append(k)
        else:
            out.extend(_texts(k))
    return out


def N(s):
    return re.sub(r"[0-9]+(\.[0-9]+)?", "#", s or "")


def main():
    d = page(sys.argv[1])
    try:
        v = eval(sys.argv[2], {"d": d, "N": N, "norm": norm, "re": re, "round": round, "sum": sum,
                               "sorted": sorted, "len": len, "all": all, "any": any})
    except Exception as e:
        v = "<error %s: %s>" % (type(e).__name__, e)
    print(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))


if __name__ == "__main__":
    main()
