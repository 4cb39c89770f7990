#!/usr/bin/env python3
"""Tests of the docs check itself: matching rules, parsing, and a run that must fail.

Run by tools/docs/check.sh before the docs; `python3 tools/docs/test_check.py` alone.
"""

import os
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import check  # noqa: E402


def matches(expected: str, actual: str) -> bool:
    return bool(check.pattern_for(expected.splitlines()).fullmatch("".join(l + "\n" for l in actual.splitlines())))


class Matching(unittest.TestCase):
    def test_exact_lines_must_match(self):
        self.assertTrue(matches("a\nb", "a\nb"))
        self.assertFalse(matches("a\nb", "a\nc"))
        self.assertFalse(matches("a", "a\nb"))

    def test_inline_wildcard_stays_within_a_line(self):
        self.assertTrue(matches('"id": "[..]",', '"id": "42",'))
        self.assertFalse(matches('"id": "[..]",', '"id": "4\n2",'))
        self.assertTrue(matches("[..] INFO x=[..] y", "2026 INFO x=1.5 y"))

    def test_ellipsis_line_matches_any_number_of_lines(self):
        self.assertTrue(matches("a\n...\nz", "a\nz"))
        self.assertTrue(matches("a\n...\nz", "a\nb\nc\nz"))
        self.assertFalse(matches("a\n...\nz", "a\nb\nc"))

    def test_regex_characters_are_literal(self):
        self.assertTrue(matches("(a+b)*.", "(a+b)*."))
        self.assertFalse(matches("a.c", "abc"))


class Parsing(unittest.TestCase):
    def setUp(self):
        self.doc = check.parse(Path(__file__).parent / "fixtures" / "drift.md")

    def test_commands_continue_over_backslashes_and_open_quotes(self):
        cmds = [s.command for s in self.doc.steps if s.command]
        self.assertEqual(len(cmds), 4)
        self.assertIn("of a command", cmds[1].text)
        self.assertIn("grep phone", cmds[2].text)
        self.assertEqual(cmds[2].expected, ['  "phone": "138 0013 8000",'])

    def test_a_session_outside_a_console_block_is_an_error(self):
        self.assertTrue(any("sessions must be ```console blocks" in e for e in self.doc.errors))

    def test_the_server_directive_must_repeat_a_shown_command(self):
        self.assertEqual([s.server for s in self.doc.steps if s.kind == "server"],
                         ["crm-comms --database-url sqlite://fixture.db"])
        self.assertFalse(any("not a line of the block above" in e for e in self.doc.errors))


class Flags(unittest.TestCase):
    def test_a_flag_the_docs_do_not_name_is_reported(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            fake = Path(d) / "crm-comms"
            fake.write_text("#!/bin/sh\n[ \"$1\" = --help ] && printf '      --listen <L>\\n      --brand-new-flag\\n'\nexit 0\n")
            fake.chmod(0o755)
            errors = check.check_flags(fake)
        self.assertEqual(errors, ["docs/operations.md: `--brand-new-flag` (crm-comms --help) is not documented"])


class Run(unittest.TestCase):
    def test_a_drifted_page_fails_with_its_lines_and_a_diff(self):
        fixture = Path(__file__).parent / "fixtures" / "drift.md"
        r = subprocess.run([sys.executable, str(Path(__file__).parent / "check.py"), str(fixture)],
                           capture_output=True, text=True, env=dict(os.environ, DOCS_CHECK_BLESS="0"), timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout
        # the phone is stored in E.164, not as the page says
        self.assertIn("fixtures/drift.md:15: output differs", out)
        self.assertIn('+  "phone": "+8613800138000",', out)
        # a failing command shows its exit status
        self.assertIn("fixtures/drift.md:18: output differs", out)
        self.assertIn("+[exit status: 1]", out)
        self.assertIn("fixtures/drift.md:22: a `$ ` line in a ```text block", out)
        # the lines that hold are not reported
        self.assertNotIn("drift.md:10:", out)
        self.assertNotIn("drift.md:12:", out)
        self.assertIn("4 commands run", out)


if __name__ == "__main__":
    unittest.main()
