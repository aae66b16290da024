"""Test helpers shared by the test files (no test file imports another): the Graph stand-in's
fixtures (`graph`), events files and the send environment (`sending`), the exactly-once invariant
(`sending.check_exactly_once`), the reference readers, and `capi sandbox` in its own process."""
