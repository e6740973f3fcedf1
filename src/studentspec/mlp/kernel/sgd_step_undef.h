/* Ends one precision's macro set in sgd_step.c (see sgd_step_impl.h for what each names), so the next can define its own. */
#undef REAL
#undef VEC
#undef MASKV
#undef VL
#undef SUFFIX
#undef V_FMA
#undef V_ZERO
#undef V_LOAD
#undef V_STORE
#undef V_BCAST
#undef V_MUL
#undef V_ADD
#undef V_SET1
#undef V_MASKLOAD
#undef V_MASKSTORE
#undef LANE_MASK
