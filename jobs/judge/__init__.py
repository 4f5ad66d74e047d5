"""The judge: is the weak model's answer as good as the strong one's, for one item?

In-batch adaptation (``--adapt F``) buys both answers for a sample of a job's items and needs
one verdict per item to fit a per-job router on. This package gives those verdicts, from a
judge model (:mod:`jobs.judge.llm`, pairwise in both orders), from a labels file
(:mod:`jobs.judge.replay`), or from the simulator's hidden difficulty
(:mod:`jobs.judge.simulated`); :mod:`jobs.judge.spec` parses ``--judge``.

Nothing is imported here on purpose: the simulated provider reads the prompt layout from
:mod:`jobs.judge.template` and must not pay for numpy or the routing package when it starts.
"""
