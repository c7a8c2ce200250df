# bash completion for busmgr -*- shell-script -*-
#
# Install as /usr/share/bash-completion/completions/busmgr (or, for one user,
# ~/.local/share/bash-completion/completions/busmgr). Completes the verbs, their options, job
# names (asked of the running manager with `busmgr list`, on the bus the command line names),
# instance names of `status`/`log`, and files for `check`, `graph`, `-o` and the manager's
# directories.

_busmgr_bus_args()
{
    # The bus options already on the command line, so job names come from the same manager.
    local i
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case ${COMP_WORDS[i]} in
            --address) printf '%s\n' --address "${COMP_WORDS[i + 1]}" ;;
            --address=*|--session|--system) printf '%s\n' "${COMP_WORDS[i]}" ;;
        esac
    done
}

_busmgr_list()
{
    local -a bus
    mapfile -t bus < <(_busmgr_bus_args)
    busmgr list "${bus[@]}" 2>/dev/null | awk 'NR > 1 { print $1 "\t" $2 }'
}

_busmgr()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local verbs="list status start stop restart reload reload-configuration emit activate
        events log graph plot check session daemon"
    local bus_opts="--address --session --system"
    local verb="" i
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -*) ;;
            *)
                case " $(echo $verbs) " in
                    *" ${words[i]} "*) verb=${words[i]}; break ;;
                esac
                ;;
        esac
    done

    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$verbs --help --version" -- "$cur"))
        return
    fi

    case $prev in
        -o|--output|--pidfile|--address-file)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --services-dir|--state-dir|--log-dir)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --address|-n|--lines|--log-size|--log-keep)
            return ;;
    esac

    local opts=""
    case $verb in
        list) opts="--json $bus_opts" ;;
        status) opts="--json -n --lines $bus_opts" ;;
        start|stop|restart) opts="--no-wait $bus_opts" ;;
        emit) opts="--no-wait $bus_opts" ;;
        events) opts="--follow --json $bus_opts" ;;
        log) opts="-n --lines -f --follow $bus_opts" ;;
        graph) opts="-o --output $bus_opts" ;;
        plot) opts="-o --output $bus_opts" ;;
        reload|reload-configuration|activate) opts="$bus_opts" ;;
        check) opts="" ;;
        session) opts="--services-dir --no-import --pidfile --state-dir --log-dir --log-size
            --log-keep --print-address --address-file" ;;
        daemon) opts="--session --system --address --services-dir --no-import --pidfile
            --state-dir --log-dir --log-size --log-keep" ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
        return
    fi

    # Positional arguments: how many came before this one (options and their values skipped),
    # and the first of them (the job).
    local n=0 job="" j
    for ((j = i + 1; j < cword; j++)); do
        case ${words[j]} in
            --address|-o|--output|-n|--lines) ((j++)) ;;
            -*) ;;
            *) ((n == 0)) && job=${words[j]}; ((n++)) ;;
        esac
    done

    case $verb in
        status|start|stop|restart|reload|log)
            if ((n == 0)); then
                COMPREPLY=($(compgen -W "$(_busmgr_list | cut -f1 | sort -u)" -- "$cur"))
            elif [[ $verb == status || $verb == log ]] && ((n == 1)); then
                COMPREPLY=($(compgen -W "$(_busmgr_list | awk -F '\t' -v j="$job" \
                    '$1 == j && $2 != "-" { print $2 }')" -- "$cur"))
            fi
            ;;
        check|graph)
            COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}

complete -F _busmgr busmgr
