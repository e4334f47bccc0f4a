"""The closing line every Python test here ends with: `N passed, M failed`.

Shared by tests/template_invariants.py and tests/local_env.py; `make test`
runs each as a script, so this sits beside them on their import path.
"""

import sys
import unittest


class Counting(unittest.TextTestResult):
    """Counts each test once: passed, or failed (however many of its subtests failed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed_ids = set()

    def addFailure(self, test, err):
        self.failed_ids.add(test.id())
        super().addFailure(test, err)

    def addError(self, test, err):
        self.failed_ids.add(test.id())
        super().addError(test, err)

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self.failed_ids.add(test.id())
        super().addSubTest(test, subtest, err)


def run(case):
    """Runs every test of the TestCase class `case`; returns the exit code."""
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, descriptions=False, resultclass=Counting).run(suite)
    failed = len(result.failed_ids)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    return 1 if failed else 0
