"""Built-in pairwise judges: ``judge(prompts, completions_a, completions_b)`` returns the
probability that A is better than B for each pair, or None where the judge failed."""
