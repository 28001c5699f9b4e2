#!/usr/bin/env python3
"""The bench_report test: scripts/bench-report on tests/bench_report/results.json (figures with two
sides, without, with a null value, with samples, and one in the old format without "met") must
give a well-formed, self-contained page with a chart per figure and a histogram per set of
samples; a malformed results.json must make it fail with one line and no traceback.

    check_report.py SCRIPT FIXTURE WORKDIR
"""
import html.parser
import json
import os
import re
import subprocess
import sys

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
SVG_XMLNS = 'xmlns="http://www.w3.org/2000/svg"'
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


class Balance(html.parser.HTMLParser):
    """html.parser accepts anything: this also checks that every element is closed, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags = [], [], {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1] if self.stack else "anything"
            self.errors.append("</%s> at line %d does not close %s"
                               % (tag, self.getpos()[0], open_tag))
            return
        self.stack.pop()


def run(script, *args):
    return subprocess.run([sys.executable, script] + list(args), capture_output=True, text=True)


def main():
    script, fixture, workdir = sys.argv[1:4]
    os.makedirs(workdir, exist_ok=True)
    with open(fixture) as f:
        figures = json.load(f)
    sample_sets = sum(len(fig.get("samples", [])) for fig in figures)
    with_goal = sum(1 for fig in figures if re.match(r"\s*[<>]=?\s*[-+.\d]", fig.get("goal", "")))

    out = os.path.join(workdir, "report.html")
    if os.path.exists(out):
        os.remove(out)
    r = run(script, fixture, out, "--commit", "abc1234", "--cpus", "2", "--date", "2025-01-02")
    check(r.returncode == 0, "exit status %d on the fixture: %s" % (r.returncode, r.stderr.strip()))
    check(out in r.stdout, "did not say where it wrote the page: %r" % r.stdout)
    if not os.path.exists(out):
        failures.append("no %s written" % out)
        return
    with open(out, encoding="utf-8") as f:
        page = f.read()

    parser = Balance()
    try:
        parser.feed(page)
        parser.close()
    except Exception as e:  # html.parser rarely raises, but a page it cannot read fails
        failures.append("html.parser: %s" % e)
    check(not parser.errors, "unbalanced elements: %s" % "; ".join(parser.errors[:3]))
    check(not parser.stack, "elements never closed: %s" % parser.stack[:3])
    check(parser.tags.get("html") == 1 and parser.tags.get("body") == 1, "no single html/body")

    svgs = page.count("<svg")
    check(svgs == len(figures) + sample_sets,
          "%d <svg> elements, expected %d figures + %d histograms"
          % (svgs, len(figures), sample_sets))
    check(parser.tags.get("svg") == svgs, "html.parser saw %s svgs" % parser.tags.get("svg"))
    check(page.count('class="histogram"') == sample_sets, "not one histogram per set of samples")
    goals = len(re.findall(r'<line [^>]*class="goal"', page))
    check(goals == with_goal, "%d goal lines, expected %d" % (goals, with_goal))
    for goal in ("1.0", "1.25", "3.0", "250"):
        check('class="goaltext">goal &lt;= %s<' % goal in page, "no goal label <= %s" % goal)
    check('class="bar met"' in page, "no bar coloured as met")
    check('class="bar missed"' in page,
          "no bar coloured as missed (heap.bytes_per_object: 1.31, goal <= 1.25)")
    check('class="bar ftrt"' in page and 'class="bar baseline"' in page,
          "no bars for the two sides")
    check('class="novalue">no value<' in page, "the chart of the null value does not say so")
    check("ft_mutex" in page and "pthread_mutex_t" in page, "side labels missing")
    check("&lt;private&gt; mutex &amp; nothing" in page, "the baseline text is not escaped")
    for text in ("abc1234", "2 CPUs", "2025-01-02"):
        check(text in page, "the title line lacks %r" % text)
    for area in ("mutex", "heap", "rc", "gc"):
        check(re.search(r"<h2>%s\b" % area, page), "no section for area %s" % area)
    check(page.count(SVG_XMLNS) == svgs, "an svg without its xmlns")
    rest = page.replace(SVG_XMLNS, "")
    for scheme in ("http://", "https://"):
        check(scheme not in rest, "the page refers to %s..." % scheme)
    check("<script" not in page and "<link" not in page and "@import" not in page
          and "url(" not in page, "the page is not self-contained")

    # Malformed inputs: a clear one-line message, a non-zero status, no traceback.
    bad_inputs = {
        "not-json.json": '[{"name": "x", "value": 1,',
        "not-array.json": '{"name": "x", "value": 1}',
        "bad-value.json": '[{"name": "x", "value": "fast", "unit": "", "goal": ""}]',
        "half-sides.json": '[{"name": "x", "value": 1, "label_a": "a", "raw_a": 1}]',
        "bad-samples.json": '[{"name": "x", "value": 1, '
                            '"samples": [{"name": "s", "values": [""]}]}]',
    }
    for name, text in bad_inputs.items():
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
            f.write(text)
        r = run(script, path, os.path.join(workdir, "bad.html"))
        check(r.returncode != 0, "%s: exit status 0" % name)
        check("Traceback" not in r.stderr and r.stderr.startswith("bench-report: ")
              and r.stderr.count("\n") == 1, "%s: not one clear line: %r" % (name, r.stderr))
    r = run(script, os.path.join(workdir, "missing.json"), os.path.join(workdir, "bad.html"))
    check(r.returncode != 0 and "Traceback" not in r.stderr, "a missing file: %r" % r.stderr)


if __name__ == "__main__":
    main()
    for failure in failures:
        print("bench_report: FAILED: %s" % failure)
    if failures:
        sys.exit(1)
    print("bench_report: the page and the malformed inputs are as expected")
