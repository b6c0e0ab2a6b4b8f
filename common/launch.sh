# Sourced by every launcher (POSIX sh): the two pieces each of them needs, written once, so that the
# knobs mean the same thing in every example (see the top README, "Layout and conventions").
#
#   . "$ROOT/common/launch.sh"
#   resolve_amp       # USE_AMP (0/1) + AMP_DTYPE (bf16/fp16) -> BF16, FP16 (True/False, for the
#                     # paddlenlp Trainer's --bf16/--fp16) and MIXED_PRECISION (no/bf16/fp16, for the
#                     # plain loops' --mixed_precision); any other value stops the launcher (status 2)
#   resolve_launch    # LAUNCH: "python -u" for one process on one node, else paddle.distributed.launch
#                     # with NPROC processes per node (or the devices in GPUS), NNODES/MASTER or IPS
#                     # for several nodes, worker logs in $OUTPUT_DIR/launch_logs
#   $LAUNCH path/to/train.py ... "$@"

resolve_amp() {
  case "${USE_AMP:-0}:${AMP_DTYPE:-bf16}" in
    0:*) BF16=False FP16=False MIXED_PRECISION=no ;;
    1:bf16) BF16=True FP16=False MIXED_PRECISION=bf16 ;;
    1:fp16) BF16=False FP16=True MIXED_PRECISION=fp16 ;;
    *) echo "USE_AMP must be 0 or 1 and AMP_DTYPE bf16 or fp16, got USE_AMP=${USE_AMP:-} AMP_DTYPE=${AMP_DTYPE:-}" >&2; exit 2 ;;
  esac
}

resolve_launch() {
  LAUNCH="python -u"
  _nodes=${NNODES:-1}
  case "${IPS:-}" in *,*) _nodes=2 ;; esac
  if [ "${NPROC:-1}" -gt 1 ] || [ "$_nodes" -gt 1 ] || [ -n "${GPUS:-}" ]; then
    if [ -n "${GPUS:-}" ]; then _devices="--gpus $GPUS"; else _devices="--nproc_per_node ${NPROC:-1}"; fi
    LAUNCH="python -u -m paddle.distributed.launch $_devices --log_dir ${OUTPUT_DIR:-.}/launch_logs"
    [ "${NNODES:-1}" -le 1 ] || LAUNCH="$LAUNCH --nnodes $NNODES"
    [ -z "${MASTER:-}" ] || LAUNCH="$LAUNCH --master $MASTER"
    [ -z "${IPS:-}" ] || LAUNCH="$LAUNCH --ips $IPS"
  fi
}
