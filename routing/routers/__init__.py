"""The learned routers, registered by name. Importing this does not import torch.

``routing.registry`` must import this package (lazily is fine) for the names to exist::

    mf          routing.routers.mf:MFRouter                 (mf, mf:CHECKPOINT_DIR)
    sw_ranking  routing.routers.sw_ranking:SWRankingRouter  (sw_ranking:CHECKPOINT_DIR)
    bert        routing.routers.bert:BertRouter             (bert:CHECKPOINT_DIR)
    causal_llm  routing.routers.causal_llm:CausalLLMRouter  (causal_llm:CHECKPOINT_OR_HF_MODEL_DIR)
"""

from routing.registry import register

register("mf", "routing.routers.mf:MFRouter")
register("sw_ranking", "routing.routers.sw_ranking:SWRankingRouter")
register("bert", "routing.routers.bert:BertRouter")
register("causal_llm", "routing.routers.causal_llm:CausalLLMRouter")
