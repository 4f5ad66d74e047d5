"""Training code for the learned routers (mf, sw_ranking, bert, causal_llm)."""
