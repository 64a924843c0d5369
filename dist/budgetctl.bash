# bash completion for budgetctl: commands, options, and the ids and unit codes budgetd holds.
# budgetctl itself prints the candidates (`budgetctl complete -- WORD...`); this only asks it.

_budgetctl()
{
    local cur words cword
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n =: cur words cword
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    if [[ ${words[cword-1]} == --socket || ${words[cword-1]} == --output ||
          ${words[cword-1]} == --data ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    local IFS=$'\n'
    COMPREPLY=($(command "${words[0]}" complete -- "${words[@]:1:cword}" 2>/dev/null))
    if declare -F __ltrim_colon_completions >/dev/null; then
        __ltrim_colon_completions "$cur"
    fi
}
complete -F _budgetctl budgetctl
