-- One merit raise per active employee for var('simulation_year'). Incremental: each run adds
-- its year, as the simulation does year after year.
{{ config(materialized='incremental', unique_key='event_id') }}

{% set year = var('simulation_year') | int %}

select
    'RAISE-{{ year }}-' || c.employee_id as event_id,
    c.employee_id,
    'raise' as event_type,
    {{ year }} as simulation_year,
    make_date({{ year }}, 1, 1) as effective_date,
    cast(round(c.annual_salary * power(1 + l.merit_pct, {{ year }} - 2024), 2) as decimal(12, 2)) as compensation_amount,
    l.merit_pct as pct_change
from {{ ref('stg_census') }} as c
join {{ ref('comp_levels') }} as l using (job_level)
where c.is_active
{% if var('fail_simulation') %}
    and error('fail_simulation is set: fct_yearly_events fails on purpose') is null
{% endif %}
{% if is_incremental() %}
    and {{ year }} not in (select simulation_year from {{ this }})
{% endif %}
